/*
 * gpu_memory: what train_ssdcu's pre-allocation estimate (mamba_gpu_memory_bytes in train_ssd.cu) says a
 * run needs, per activation-recomputation level (-r 0, 1, 2), without a GPU: the weights, gradients,
 * AdamW moments, activations and cuBLASLt's workspace that train_ssdcu allocates (not the CUDA context,
 * nor cuBLAS's and NCCL's own buffers, which `device memory in use` also counts), and with -cs 1 (one
 * micro-batch a step: B carried streams) the carried states besides.
 *   make gpu_memory && ./build/gpu/gpu_memory configs/mamba2-130m.json 1 131072 [world [zero]]
 */
#include "train_ssd.cu"

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s <config.json> <B> <T> [world (default 1) [zero 0|1 (default 0)]]\n", argv[0]);
        return 1;
    }
    ModelConfig config;
    config_load(&config, argv[1]);
    int B = atoi(argv[2]), T = atoi(argv[3]), world = argc > 4 ? atoi(argv[4]) : 1, zero = argc > 5 ? atoi(argv[5]) : 0;
    if (B < 1 || T < 1 || world < 1 || (zero != 0 && zero != 1)) {
        fprintf(stderr, "%s: B, T and world must be positive and zero 0 or 1\n", argv[0]);
        return 1;
    }
    printf("%s, B %d x T %d, %d rank%s%s, %s\n", config.name, B, T, world, world == 1 ? "" : "s", zero ? ", ZeRO-1" : "",
           PRECISION_NAME);
    for (int r = 0; r <= RECOMPUTE_SCAN; r++)
        printf("  -r %d: %8.2f GiB, with -cs 1 %8.2f GiB\n", r,
               mamba_gpu_memory_bytes(&config, B, T, world, zero, r, 0) / 1073741824.0,
               mamba_gpu_memory_bytes(&config, B, T, world, zero, r, B) / 1073741824.0);
    return 0;
}

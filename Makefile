# ssd.c: a CPU reference trainer (train_ssd) and a CUDA trainer (train_ssdcu) for Mamba-2 / SSD-Mamba.
#
#   make            build train_ssd (CPU, OpenMP) and train_ssdcu (CUDA, if nvcc is found)
#   make test       build and run the CPU test suite; the last line is "N passed, N failed"
#   make test_gpu   build and run the GPU tests (needs a GPU)
#   make bench      GPU benchmark (needs a GPU)
#   make fuzz       hostile-input fuzzing of train_ssd under ASan + UBSan (tests/fuzz/fuzz.py; FUZZ_ARGS, e.g.
#                   FUZZ_ARGS="--seconds 600" or "--cases 10000 --jobs 2"); findings and reproducers in fuzz_findings/
#
# Several ranks: train_ssd is built with MPI when mpicc exists (run it with mpirun -np W), and
# train_ssdcu with NCCL. NCCL is looked for in NCCL_HOME (include/nccl.h, lib/libnccl.so.2), by default
# the nvidia-nccl-cu13 Python wheel's folder, else the system's. NO_NCCL=1 builds a single-GPU
# train_ssdcu without it; NO_MPI=1 a train_ssd without MPI.
#
# Layout, each folder using only those below it: train/ (the training loop and its plumbing: flags,
# schedule, logging, evaluation, checkpoints, ranks), model/ (config, parameters, the CPU model),
# data/ (shards, loader, tokenizer), common/ (checked I/O, files, random numbers); kernels/ beside.
# Host-side files are shared by both trainers; the CPU compute (model/cpu_*.c, train/cpu_*.c) is built
# in float (train_ssd) and in double (build/f64, for the gradient checks and duality tests in tests/).

MPICC := $(if $(NO_MPI),,$(shell command -v mpicc 2> /dev/null))
CC := $(if $(MPICC),$(MPICC),$(if $(filter default,$(origin CC)),gcc,$(CC)))
CFLAGS ?= -O3 -march=native
CFLAGS += -Wall -Wextra -Wno-unused-parameter -fopenmp -std=gnu11 -I.
LDLIBS = -lcjson -lzstd -lm -fopenmp -lpthread
NVCC ?= nvcc
# train_ssdcu runs on every NVIDIA GPU from Ampere on: machine code for sm_80 (A100), sm_86 (RTX 30xx,
# A10, A40), sm_89 (RTX 40xx, L4, L40S), sm_90 (H100, H200) and sm_100 (B200, GB200), and compute_100
# PTX that the driver compiles for newer ones. GPU_ARCH="-arch=native" builds for this machine's GPU alone.
GPU_ARCHS ?= 80 86 89 90 100
GPU_ARCH ?= $(foreach a,$(GPU_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
            -gencode arch=compute_$(lastword $(GPU_ARCHS)),code=compute_$(lastword $(GPU_ARCHS))
PRECISION ?= BF16
NVCC_FLAGS ?= -O3 --use_fast_math -std=c++17 --threads 0 $(GPU_ARCH) -I. -DENABLE_$(PRECISION)
NVCC_LDLIBS = -lcublas -lcublasLt -lcjson -lzstd -Xcompiler -fopenmp -lgomp -lpthread
NCCL_HOME ?= $(shell python3 -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2> /dev/null)
ifeq ($(NO_NCCL),)
ifneq ($(NCCL_HOME),)
NVCC_FLAGS += -I$(NCCL_HOME)/include -DUSE_NCCL
NVCC_LDLIBS += -L$(NCCL_HOME)/lib -l:libnccl.so.2 -Xlinker -rpath=$(NCCL_HOME)/lib
else ifneq ($(wildcard /usr/include/nccl.h),)
NVCC_FLAGS += -DUSE_NCCL
NVCC_LDLIBS += -lnccl
else
$(warning NCCL not found (set NCCL_HOME, or pip install nvidia-nccl-cu13): train_ssdcu is built for one GPU)
endif
endif
BUILD = build

CPU_SRCS := $(wildcard model/cpu_*.c train/cpu_*.c)
# the MPI collectives go into train_ssd only: train_ssdcu links the other host objects without MPI
MPI_SRCS := train/comm_mpi.c
HOST_SRCS := $(filter-out $(CPU_SRCS) $(MPI_SRCS), $(wildcard common/*.c data/*.c model/*.c train/*.c))
MPI_OBJS := $(MPI_SRCS:%.c=$(BUILD)/host/%.o)
HOST_OBJS := $(HOST_SRCS:%.c=$(BUILD)/host/%.o)
F32_OBJS := $(CPU_SRCS:%.c=$(BUILD)/f32/%.o)
F64_OBJS := $(CPU_SRCS:%.c=$(BUILD)/f64/%.o)
HEADERS := $(wildcard common/*.h data/*.h model/*.h train/*.h)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_HEADERS := $(wildcard tests/*.h)
HAVE_NVCC := $(shell command -v $(NVCC) 2> /dev/null)

.PHONY: all test test_gpu bench gpu_memory fuzz clean dev results_equivalence results_mixture results_runtime
.SECONDARY:
all: train_ssd $(if $(HAVE_NVCC),train_ssdcu)

$(BUILD)/host/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/f32/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/f64/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSSD_DOUBLE -c $< -o $@

$(BUILD)/host/train/comm_mpi.o: train/comm_mpi.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(MPICC),-DUSE_MPI) -c $< -o $@

train_ssd: train_ssd.c $(HOST_OBJS) $(MPI_OBJS) $(F32_OBJS) $(HEADERS)
	$(CC) $(CFLAGS) $< $(HOST_OBJS) $(MPI_OBJS) $(F32_OBJS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(TEST_HEADERS) $(HOST_OBJS) $(F64_OBJS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSSD_DOUBLE $< $(HOST_OBJS) $(F64_OBJS) $(LDLIBS) -o $@

# reads a model file and int32 tokens, writes fp32 logits (tests/hf_parity.py, on a machine with torch)
$(BUILD)/logits_main: tests/logits_main.c $(HOST_OBJS) $(F64_OBJS) $(HEADERS)
	$(CC) $(CFLAGS) -DSSD_DOUBLE $< $(HOST_OBJS) $(F64_OBJS) $(LDLIBS) -o $@

# ---- dev/: the workbench programs behind results/ (results/README.md), each built in double (_f64)
# or float (_f32); make results_<name> remakes that folder's CPU numbers and plots ----
DEV_BINS := $(BUILD)/dev/ssd_equivalence_f64 $(BUILD)/dev/ssd_equivalence_f32 $(BUILD)/dev/ssd_mixture_f64 \
            $(BUILD)/dev/ssd_runtime_f32
$(BUILD)/dev/%_f64: dev/%.c $(TEST_HEADERS) $(HOST_OBJS) $(F64_OBJS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSSD_DOUBLE $< $(HOST_OBJS) $(F64_OBJS) $(LDLIBS) -o $@
$(BUILD)/dev/%_f32: dev/%.c $(TEST_HEADERS) $(HOST_OBJS) $(F32_OBJS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(HOST_OBJS) $(F32_OBJS) $(LDLIBS) -o $@
dev: $(DEV_BINS)

results_equivalence: $(BUILD)/dev/ssd_equivalence_f64 $(BUILD)/dev/ssd_equivalence_f32
	@mkdir -p results/equivalence
	$(BUILD)/dev/ssd_equivalence_f64 --out results/equivalence/cpu_fp64.csv
	$(BUILD)/dev/ssd_equivalence_f32 --out results/equivalence/cpu_fp32.csv
	python3 scripts/results_plot.py equivalence results/equivalence
results_mixture: $(BUILD)/dev/ssd_mixture_f64
	@mkdir -p results/mixture
	OMP_NUM_THREADS=1 $(BUILD)/dev/ssd_mixture_f64 --out results/mixture/runs.json
	python3 scripts/results_plot.py mixture results/mixture
results_runtime: $(BUILD)/dev/ssd_runtime_f32
	@mkdir -p results/runtime
	OMP_NUM_THREADS=1 $(BUILD)/dev/ssd_runtime_f32 --out results/runtime/cpu.csv
	python3 scripts/results_plot.py runtime results/runtime

test: train_ssd $(TEST_BINS) $(BUILD)/logits_main $(BUILD)/asan/train_ssd $(DEV_BINS)
	@bash tests/run_tests.sh $(TEST_BINS)

# ---- the fuzz harness: train_ssd built with AddressSanitizer and UBSan (every finding aborts), one
# process without MPI, driven by tests/fuzz/fuzz.py; make test runs a short fixed-seed pass ----
SAN_CC ?= gcc
SAN_CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow \
             -fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter -fopenmp -std=gnu11 -I.
SAN_OBJS := $(HOST_SRCS:%.c=$(BUILD)/asan/%.o) $(MPI_SRCS:%.c=$(BUILD)/asan/%.o) $(CPU_SRCS:%.c=$(BUILD)/asan/%.o)
FUZZ_ARGS ?= --seconds 300 --jobs 2

$(BUILD)/asan/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(SAN_CFLAGS) -c $< -o $@
$(BUILD)/asan/train_ssd: train_ssd.c $(SAN_OBJS) $(HEADERS)
	$(SAN_CC) $(SAN_CFLAGS) $< $(SAN_OBJS) $(LDLIBS) -o $@

fuzz: $(BUILD)/asan/train_ssd
	python3 tests/fuzz/fuzz.py --binary $(BUILD)/asan/train_ssd $(FUZZ_ARGS)

# ---- CUDA: train_ssdcu, GPU tests (both precisions), benchmark ----
CU_HEADERS := $(wildcard kernels/*.cuh train/*.cuh)
NVCC_WARN = -Xcompiler -Wall,-Wextra,-Wno-unused-parameter
GPU_TEST_SRCS := $(wildcard tests/gpu/test_*.cu)
# the tests are built for the GPU of the machine that runs them, in both precisions, and once more
# (bf16) as compute_80 PTX alone, which the driver compiles: the code an A100 runs, checked here too
GPU_TEST_ARCH ?= -arch=native
GPU_TEST_BINS := $(foreach p,BF16 FP32 PTX80,$(GPU_TEST_SRCS:tests/gpu/%.cu=$(BUILD)/gpu/$(p)/%))

# the training loop, shared with train_ssd, links the float CPU model (it can sample from a CPU copy)
train_ssdcu: train_ssd.cu $(CU_HEADERS) $(HOST_OBJS) $(F32_OBJS) $(HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_WARN) $< $(HOST_OBJS) $(F32_OBJS) $(NVCC_LDLIBS) -o $@

# GPU tests include train_ssd.cu (with -DTESTING) and link the double-precision CPU reference
GPU_TEST_DEPS = $(CU_HEADERS) train_ssd.cu tests/test.h $(wildcard tests/gpu/*.h) $(HOST_OBJS) $(F64_OBJS) $(HEADERS)
NVCC_BASE_FLAGS = $(filter-out -DENABLE_% $(GPU_ARCH),$(NVCC_FLAGS)) $(NVCC_WARN)
GPU_TEST_FLAGS = $(NVCC_BASE_FLAGS) -DTESTING -DSSD_DOUBLE
$(BUILD)/gpu/BF16/%: tests/gpu/%.cu $(GPU_TEST_DEPS)
	@mkdir -p $(dir $@)
	$(NVCC) $(GPU_TEST_FLAGS) $(GPU_TEST_ARCH) -DENABLE_BF16 $< $(HOST_OBJS) $(F64_OBJS) $(NVCC_LDLIBS) -o $@
$(BUILD)/gpu/FP32/%: tests/gpu/%.cu $(GPU_TEST_DEPS)
	@mkdir -p $(dir $@)
	$(NVCC) $(GPU_TEST_FLAGS) $(GPU_TEST_ARCH) -DENABLE_FP32 $< $(HOST_OBJS) $(F64_OBJS) $(NVCC_LDLIBS) -o $@
$(BUILD)/gpu/PTX80/%: tests/gpu/%.cu $(GPU_TEST_DEPS)
	@mkdir -p $(dir $@)
	$(NVCC) $(GPU_TEST_FLAGS) -gencode arch=compute_80,code=compute_80 -DENABLE_BF16 $< $(HOST_OBJS) $(F64_OBJS) \
	    $(NVCC_LDLIBS) -o $@

# the FP32 trainer for the GPU training-parity test
$(BUILD)/gpu/FP32/train_ssdcu: train_ssd.cu $(CU_HEADERS) $(HOST_OBJS) $(F32_OBJS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_BASE_FLAGS) $(GPU_TEST_ARCH) -DENABLE_FP32 $< $(HOST_OBJS) $(F32_OBJS) $(NVCC_LDLIBS) -o $@

# the GPU training tests' data: Tiny Shakespeare in GPT-2 tokens, from ../shared/data
GPU_TEST_DATA = datasets/tinyshakespeare/tokenizer.bin
$(GPU_TEST_DATA):
	python3 scripts/prepro.py --recipe tinyshakespeare --tokenizer gpt2

test_gpu: $(GPU_TEST_BINS) train_ssdcu $(BUILD)/gpu/FP32/train_ssdcu train_ssd $(GPU_TEST_DATA)
	@bash tests/run_tests.sh --scripts tests/gpu $(GPU_TEST_BINS)

bench: train_ssdcu
	@bash scripts/bench.sh

# train_ssdcu's device-memory estimate per recomputation level, printed without a GPU (scripts/gpu_memory.cu)
gpu_memory: $(BUILD)/gpu/gpu_memory
$(BUILD)/gpu/gpu_memory: scripts/gpu_memory.cu train_ssd.cu $(CU_HEADERS) $(HOST_OBJS) $(F32_OBJS) $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_WARN) -DTESTING $< $(HOST_OBJS) $(F32_OBJS) $(NVCC_LDLIBS) -o $@

clean:
	rm -rf $(BUILD) train_ssd train_ssdcu

/*
 * Optimizer-state files and checkpoint directories, written atomically (model files: model/model_file.h).
 *
 * Every file is written to "<path>.tmp" in the same directory, flushed and fsync'd, renamed over
 * <path>, and the directory is fsync'd; a checkpoint's DONE marker is written last, the same way.
 * A crash or SIGKILL at any moment therefore leaves every earlier checkpoint intact and loadable.
 * All integers are little-endian. CRC-32 is the IEEE/zlib one (python: zlib.crc32).
 *
 * STATE FILE (one per process: AdamW moments, master weights, RNG, data loader position)
 *   0      8     magic "SSDSTATE"
 *   8      4     u32 version: 1, or 2 when the carried states are present (flag bit 1)
 *   12     4     u32 flags: bit 0 = fp32 master weights present, bit 1 = carried states present (-cs 1)
 *   16     8     i64 step: optimizer steps completed
 *   24     8     u64 rng_state of the run
 *   32     8     u64 run_id: random at a run's first start, kept across resumes
 *   40     4     i32 world_size
 *   44     4     i32 rank
 *   48     8     u64 num_params of the model
 *   56     8     u64 shard_offset: first parameter whose moments this process holds
 *   64     8     u64 shard_count S: number of parameters whose moments this process holds
 *   72     8     u64 loader_bytes: size of the opaque data loader state
 *   80     4     u32 config_bytes: length of the model config JSON
 *   84     4     u32 settings_bytes: length of the training settings JSON (TrainSettings)
 *   88     4     u32 data_crc: CRC-32 of everything after the two JSON texts
 *   92     4     u32 reserved, 0
 *   96     4     u32 header_crc: CRC-32 of bytes 0..95 followed by both JSON texts
 *   100    4     u32 reserved, 0
 *   104    ...   config JSON, settings JSON, m[S] f32, v[S] f32, master[S] f32 (if flag), loader state,
 *                carried states f32 (if flag; their count is what the file holds after the loader state):
 *                this rank's conv and SSD states of its streams, for an exact resume of -cs 1
 *
 * CHECKPOINT DIRECTORY (the run's output dir)
 *   model_%08d.bin        model file at that step (written by rank 0)
 *   state_%08d_%05d.bin   state file of each rank at that step
 *   DONE_%08d             marker, written last by rank 0 once all ranks' files are in place:
 *                         one text line "step S run_id R world_size W model_crc C"
 * Only a step with its DONE marker counts as a checkpoint; loading checks that the model file's
 * CRC and every state file's run id, step, rank and world size agree with the marker. Only regular
 * files are read, and a model or state file holding a non-finite value (or a negative second moment)
 * is refused, naming the tensor.
 *
 * With data parallelism over W ranks, rank r holds the moments of checkpoint_shard_range(n, W, r):
 * shards of ceil(n / W) parameters, the last non-empty one shorter, any after it empty (n < W, or
 * e.g. n = 9, W = 4). A checkpoint written by W ranks loads on W' ranks (resharding):
 * checkpoint_load_shard reads the marker's W state files, checks that their shards tile [0, n)
 * exactly, and assembles any wanted range [offset, offset + count) from them, streaming each file
 * it needs (those overlapping the range, and rank 0's, whose loader state and rng state every rank
 * takes) once through its CRC; memory stays at the wanted range plus a 4 MiB buffer.
 * Saving is the same for any W: each rank checkpoint_save_state, rank 0 checkpoint_save_model and,
 * after all ranks have saved, checkpoint_mark_done (its world size is the one the files were written
 * with, whatever a later run's is) and checkpoint_prune.
 */
#ifndef SSD_TRAIN_CHECKPOINT_H
#define SSD_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "model/model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- state files ---- */

/* Training settings that must be equal for an exact resume; stored in every state file. */
typedef struct {
    int B;                       /* micro-batch size per process */
    int T;                       /* sequence length */
    long long total_batch_size;  /* tokens per optimizer step over all processes */
    long long max_steps;
    int warmup_steps;
    float learning_rate;
    float final_lr_frac;         /* final learning rate as a fraction of learning_rate */
    float weight_decay;
    float grad_clip;
    char lr_schedule[16];        /* e.g. "cosine" */
} TrainSettings;

/* The per-process training state. Written from the caller's buffers; read into malloc'd ones. */
typedef struct {
    long long step;              /* optimizer steps completed */
    uint64_t rng_state;
    uint64_t run_id;
    int world_size, rank;
    size_t shard_offset, shard_count;  /* the parameters [offset, offset+count) whose moments are here */
    float *m, *v;                /* AdamW first and second moments, shard_count each */
    float *master;               /* fp32 master weights of the shard, or NULL */
    void *loader_state;          /* opaque data loader position (data/dataloader.h), may be NULL if 0 bytes */
    size_t loader_state_bytes;
    float *carry;                /* this rank's carried states (-cs 1, opaque to the file), NULL if none */
    size_t carry_count;
} TrainState;

void state_file_write(const char *path, const ModelConfig *config, const TrainSettings *settings,
                      const TrainState *state);
/* Reads a state file with the config and settings stored in it; non-zero with a message on error. */
int state_file_try_read(const char *path, ModelConfig *config, TrainSettings *settings, TrainState *state,
                        char *err, size_t errlen);
/* Frees the buffers of a TrainState filled by a read. */
void train_state_free(TrainState *state);
/* 0 if equal, else non-zero with a message naming the first field that differs. */
int train_settings_compare(const TrainSettings *stored, const TrainSettings *current, char *err, size_t errlen);

/* ---- checkpoint directories ---- */

/* A fresh random run id (from /dev/urandom, else the clock and pid). Rank 0 makes it and shares it. */
uint64_t checkpoint_new_run_id(void);
/* Rank 0: writes model_<step>.bin; returns its data CRC for checkpoint_mark_done. */
uint32_t checkpoint_save_model(const char *dir, long long step, const ModelConfig *config, const float *params,
                               int bf16);
/* Every rank: writes state_<step>_<rank>.bin (step and rank from the state). */
void checkpoint_save_state(const char *dir, const ModelConfig *config, const TrainSettings *settings,
                           const TrainState *state);
/* Rank 0, after all ranks have saved: writes DONE_<step>, making the checkpoint count. It cannot see
 * whether the other ranks' files are complete (it trusts the caller's barrier; loading checks them);
 * it only deletes state files of this step from ranks >= world_size, left by an unfinished earlier
 * attempt at the step with more processes. */
void checkpoint_mark_done(const char *dir, long long step, uint64_t run_id, int world_size, uint32_t model_crc);
/* One process: model, state and marker, then retention (see checkpoint_prune). */
void checkpoint_save(const char *dir, const ModelConfig *config, const float *params, int bf16,
                     const TrainSettings *settings, const TrainState *state, int keep_last, int keep_every);
/* 1 if dir holds a run: main.log or any checkpoint file (model_, state_, DONE_, or a .tmp of one), and
 * names the first one found in found; 0 if it holds none or does not exist. Exits if it cannot be read. */
int checkpoint_dir_holds_run(const char *dir, char *found, size_t n);
/* Deletes main.log and every checkpoint file of dir, markers first (a fresh run with -ow 1). */
void checkpoint_dir_clear(const char *dir);
/* Newest step that has its DONE marker, or -1 if none (also if the directory does not exist). */
long long checkpoint_latest_step(const char *dir);
/* Rank 0, after checkpoint_mark_done: keeps the newest keep_last checkpoints (all if <= 0) and every
 * step that is a multiple of keep_every (none if <= 0); deletes the others, marker first. Also
 * removes files of unfinished checkpoints older than the newest complete one. */
void checkpoint_prune(const char *dir, int keep_last, int keep_every);
/* Loads the checkpoint at step for this rank. expected_config may be NULL (take the file's);
 * the stored settings must equal *settings, and the world size and rank must match. Fills config,
 * a malloc'd fp32 params buffer and the state (free with train_state_free). Non-zero with a
 * message on any mismatch or corruption; checkpoint_load prints it and exits. */
int checkpoint_try_load(const char *dir, long long step, const ModelConfig *expected_config,
                        const TrainSettings *settings, int world_size, int rank, ModelConfig *config,
                        float **params, TrainState *state, char *err, size_t errlen);
void checkpoint_load(const char *dir, long long step, const ModelConfig *expected_config,
                     const TrainSettings *settings, int world_size, int rank, ModelConfig *config,
                     float **params, TrainState *state);
/* Loads the checkpoint at step for a process that wants the moments (and master weights, if every
 * stored state file has them) of parameters [want_offset, want_offset + want_count), whatever world
 * size wrote it: the range is assembled from the stored state files (see CHECKPOINT DIRECTORY).
 * Checks as checkpoint_try_load (marker, model CRC, config, and each stored file's run id, step,
 * rank, world size and settings; B must be equal, the caller changes gradient accumulation when it
 * has another number of processes) plus that the stored shards tile [0, n) exactly. Fills config,
 * params, the number of processes that wrote the checkpoint in *stored_world (may be NULL) and the
 * state: shard_offset/count = the wanted range; rng_state and the loader state are the stored rank
 * 0's; world_size = *stored_world and rank = 0 describe where those came from, so the caller sets
 * its own world size and rank before saving. Free with train_state_free. Non-zero with a message
 * naming the file on any mismatch or corruption; checkpoint_load_shard prints it and exits. */
int checkpoint_try_load_shard(const char *dir, long long step, const ModelConfig *expected_config,
                              const TrainSettings *settings, size_t want_offset, size_t want_count, ModelConfig *config,
                              float **params, TrainState *state, int *stored_world, char *err, size_t errlen);
/* The carried states rank `rank` saved at step (malloc'd; count 0 and NULL if it saved none): read from its state
 * file whole, checksum and finiteness checked; exits with a message naming the file otherwise. The caller checks
 * that the checkpoint was written by as many ranks as it has. */
void checkpoint_load_carry(const char *dir, long long step, int rank, float **carry, size_t *count);
void checkpoint_load_shard(const char *dir, long long step, const ModelConfig *expected_config,
                           const TrainSettings *settings, size_t want_offset, size_t want_count, ModelConfig *config,
                           float **params, TrainState *state, int *stored_world);
/* The shard of `rank` of `world` for n parameters: shards of ceil(n / world) parameters in rank order,
 * clipped to [0, n): the last non-empty one may be shorter, any after it are empty (count 0, offset n). */
void checkpoint_shard_range(size_t n, int world, int rank, size_t *offset, size_t *count);


#ifdef __cplusplus
}
#endif
#endif

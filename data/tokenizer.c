/*
 * Reads tokenizer.bin (format in tokenizer.h) and decodes token ids to their bytes.
 */
#include "data/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileio.h" /* checkpoint_crc32 */
#include "common/utils.h"

/* longer entries than this mean a corrupt file */
#define TOKENIZER_MAX_TOKEN_BYTES (1u << 16)

static void tokenizer_error(const char *path, const char *msg, long value) {
    fprintf(stderr, "error: %s: %s (%ld)\n", path, msg, value);
    exit(1);
}

void tokenizer_init(Tokenizer *t, const char *path) {
    memset(t, 0, sizeof(*t));
    t->eot_id = -1;
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "warning: tokenizer file %s not found; samples are printed as token ids\n", path);
        return;
    }
    char err[8192];
    FILE *fp = fopen_regular(path, "tokenizer", err, sizeof(err));
    if (fp == NULL) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    int32_t header[TOKENIZER_HEADER_INTS];
    if (fread(header, sizeof(int32_t), TOKENIZER_HEADER_INTS, fp) != TOKENIZER_HEADER_INTS)
        tokenizer_error(path, "truncated header", 0);
    if (header[0] != TOKENIZER_MAGIC) tokenizer_error(path, "bad magic, not a tokenizer.bin", header[0]);
    if (header[1] != 1) tokenizer_error(path, "unsupported version", header[1]);
    if (header[2] <= 0) tokenizer_error(path, "bad vocab_size", header[2]);
    /* each token takes at least its 4-byte length: a larger vocab_size is corrupt (and no allocation for it) */
    if ((st.st_size - (long long)sizeof(header)) / 4 < header[2])
        tokenizer_error(path, "vocab_size larger than the file can hold", header[2]);
    if (header[3] < -1 || header[3] >= header[2]) tokenizer_error(path, "eot id out of range", header[3]);
    if (header[4] < TOKENIZER_BYTES || header[4] > TOKENIZER_WORD) tokenizer_error(path, "unknown tokenizer kind", header[4]);
    t->vocab_size = header[2];
    t->eot_id = header[3];
    t->kind = header[4];
    t->tokens = (char **)callocCheck((size_t)t->vocab_size, sizeof(char *));
    for (int i = 0; i < t->vocab_size; i++) {
        uint32_t len;
        if (fread(&len, sizeof(len), 1, fp) != 1) tokenizer_error(path, "truncated: missing the length of token", i);
        if (len > TOKENIZER_MAX_TOKEN_BYTES) tokenizer_error(path, "corrupt: implausible length of token", i);
        t->tokens[i] = (char *)mallocCheck(len + 1);
        if (fread(t->tokens[i], 1, len, fp) != len) tokenizer_error(path, "truncated: missing the bytes of token", i);
        t->tokens[i][len] = '\0';
        t->table_crc = checkpoint_crc32(t->table_crc, &len, sizeof(len));
        t->table_crc = checkpoint_crc32(t->table_crc, t->tokens[i], len);
    }
    if (fgetc(fp) != EOF) tokenizer_error(path, "data continues after the last token; vocab_size is", t->vocab_size);
    fclose(fp);
    t->loaded = 1;
}

const char *tokenizer_decode(Tokenizer *t, uint32_t token_id) {
    if (t->loaded && token_id < (uint32_t)t->vocab_size) return t->tokens[token_id];
    snprintf(t->unknown, sizeof(t->unknown), "<%u>", token_id);
    return t->unknown;
}

int tokenizer_eot(const Tokenizer *t) { return t->eot_id; }

void tokenizer_free(Tokenizer *t) {
    if (t->tokens) {
        for (int i = 0; i < t->vocab_size; i++) free(t->tokens[i]);
        free(t->tokens);
    }
    memset(t, 0, sizeof(*t));
}

static const char *KIND_NAMES[] = {"bytes", "gpt2", "gpt-neox-20b", "word"};

void tokenizer_name(const Tokenizer *t, char *out, size_t n) {
    if (!t->loaded) snprintf(out, n, "%s", "");
    else if (t->kind == TOKENIZER_WORD) snprintf(out, n, "word-%08x", (unsigned)t->table_crc);
    else snprintf(out, n, "%s", KIND_NAMES[t->kind]);
}

int tokenizer_note_kind(const char *note) {
    if (note == NULL || note[0] == '\0') return -1;
    if (strstr(note, "neox")) return TOKENIZER_NEOX;
    if (strstr(note, "gpt2")) return TOKENIZER_GPT2;
    if (!strcmp(note, "bytes") || !strcmp(note, "byte")) return TOKENIZER_BYTES;
    if (strstr(note, "word")) return TOKENIZER_WORD;
    return -1;
}

/* "word-" followed by exactly 8 hex digits: the table's CRC (1, *crc set), else 0 */
static int note_word_crc(const char *note, uint32_t *crc) {
    if (strncmp(note, "word-", 5) != 0 || strlen(note) != 13) return 0;
    for (int i = 5; i < 13; i++)
        if (!strchr("0123456789abcdefABCDEF", note[i])) return 0;
    *crc = (uint32_t)strtoul(note + 5, NULL, 16);
    return 1;
}

TokenizerMatch tokenizer_match_note(const Tokenizer *t, const char *note, int model_vocab, char *why, size_t n) {
    char name[32];
    tokenizer_name(t, name, sizeof(name));
    if (why && n) why[0] = '\0';
    if (t->vocab_size > model_vocab) {
        snprintf(why, n, "it has %d token ids and the model only %d", t->vocab_size, model_vocab);
        return TOKENIZER_MISMATCH;
    }
    int kind = tokenizer_note_kind(note);
    if (kind < 0) return TOKENIZER_UNCHECKED;
    if (kind != t->kind) {
        snprintf(why, n, "it is '%s', the model's is '%s'", name, note);
        return TOKENIZER_MISMATCH;
    }
    if (kind == TOKENIZER_WORD) {
        uint32_t crc;
        if (note_word_crc(note, &crc) ? crc != t->table_crc : t->vocab_size != model_vocab) {
            snprintf(why, n, "it is the word vocabulary '%s' of %d words, the model's is '%s' of %d", name, t->vocab_size,
                     note, model_vocab);
            return TOKENIZER_MISMATCH;
        }
    }
    return TOKENIZER_MATCH;
}

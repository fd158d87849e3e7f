/*
 * Token decoding for printing samples: reads tokenizer.bin (written by scripts/prepro.py) and maps each
 * token id to its bytes.
 *
 * tokenizer.bin: a header of 256 int32 [magic 20251123, version 1, vocab_size, eot_id (-1 if none),
 * kind (0 bytes, 1 gpt2, 2 neox, 3 word)], then for every id 0..vocab_size-1: a uint32 byte count and
 * that many bytes (the token's text; special tokens as their literal text, word-level words with a
 * trailing space and <eos> as a newline).
 */
#ifndef SSD_DATA_TOKENIZER_H
#define SSD_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOKENIZER_MAGIC 20251123
#define TOKENIZER_HEADER_INTS 256

typedef enum { TOKENIZER_BYTES = 0, TOKENIZER_GPT2 = 1, TOKENIZER_NEOX = 2, TOKENIZER_WORD = 3 } TokenizerKind;

typedef struct {
    int loaded;          /* 0 when the file was missing: decode gives "<id>" */
    int vocab_size;
    int eot_id;
    int kind;
    uint32_t table_crc;  /* CRC-32 of the token table (every length and its bytes, in id order) */
    char **tokens;       /* vocab_size NUL-terminated byte strings */
    char unknown[32];    /* "<id>" text for ids without an entry */
} Tokenizer;

/* a missing file gives a warning and a tokenizer that decodes every id as "<id>"; a malformed one exits */
void tokenizer_init(Tokenizer *t, const char *path);
/* the bytes of one token, NUL-terminated; "<id>" for ids outside the vocabulary (valid until the next call) */
const char *tokenizer_decode(Tokenizer *t, uint32_t token_id);
/* the end-of-text id, or -1 */
int tokenizer_eot(const Tokenizer *t);
void tokenizer_free(Tokenizer *t);

/* Which tokenizer made a model's token ids. A model records it as a short note in its config
 * ("tokenizer", model/config.h): the trainers write tokenizer_name() of the data's tokenizer.bin, and
 * scripts/hf_import.py writes e.g. "gpt-neox-20b". tokenizer_name: "bytes", "gpt2", "gpt-neox-20b", or
 * "word-<crc32 of the token table, 8 hex digits>" (a word vocabulary belongs to its corpus). */
void tokenizer_name(const Tokenizer *t, char *out, size_t n);
/* The kind a note names (TOKENIZER_*), or -1 when the note is empty or names no kind known here. */
int tokenizer_note_kind(const char *note);
typedef enum { TOKENIZER_MATCH = 0, TOKENIZER_MISMATCH = 1, TOKENIZER_UNCHECKED = 2 } TokenizerMatch;
/* Whether a loaded tokenizer is the one a model's note names (model_vocab: the model's vocab_size).
 * MISMATCH: another kind; a word vocabulary with another table (notes "word-<crc>") or, for other word
 * notes such as "wikitext2-word", another size than the model's; or more ids than the model has.
 * UNCHECKED: an empty note, or one that names no known kind. On MISMATCH, why says what differs. */
TokenizerMatch tokenizer_match_note(const Tokenizer *t, const char *note, int model_vocab, char *why, size_t n);

#ifdef __cplusplus
}
#endif
#endif

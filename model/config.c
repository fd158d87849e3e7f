#include "model/config.h"
#include "common/utils.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fields a config must have, with their valid ranges (docs/config.md); the optional ones below take the
 * reference defaults. */
typedef struct {
    const char *name;
    long lo, hi;
} IntFieldRange;
static const IntFieldRange INT_FIELDS[] = {
    {"d_model", 1, 65536}, {"n_layer", 1, 1024},  {"vocab_size", 1, 16777216}, {"pad_vocab_multiple", 1, 65536},
    {"d_state", 1, 1024},  {"d_conv", 1, 64},     {"expand", 1, 64},           {"headdim", 1, 65536},
    {"ngroups", 1, 65536}, {"chunk_size", 1, 65536}};
typedef struct {
    const char *name;
    double lo, hi;
} FloatFieldRange;
static const FloatFieldRange FLOAT_FIELDS[] = {
    {"dt_min", 1e-6, 10.0}, {"dt_max", 1e-6, 10.0}, {"dt_init_floor", 1e-12, 10.0}, {"norm_eps", 1e-12, 1.0}};
/* derived sizes: d_inner = expand * d_model and ngroups * d_state each at most this */
#define CONFIG_MAX_INNER (1L << 20)
static const char *OPTIONAL_FIELDS[] = {"name", "a_structure", "dt_min", "dt_max", "dt_init_floor", "norm_eps", "tokenizer"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int *int_field(ModelConfig *c, const char *key) {
    if (!strcmp(key, "d_model")) return &c->d_model;
    if (!strcmp(key, "n_layer")) return &c->n_layer;
    if (!strcmp(key, "vocab_size")) return &c->vocab_size;
    if (!strcmp(key, "pad_vocab_multiple")) return &c->pad_vocab_multiple;
    if (!strcmp(key, "d_state")) return &c->d_state;
    if (!strcmp(key, "d_conv")) return &c->d_conv;
    if (!strcmp(key, "expand")) return &c->expand;
    if (!strcmp(key, "headdim")) return &c->headdim;
    if (!strcmp(key, "ngroups")) return &c->ngroups;
    if (!strcmp(key, "chunk_size")) return &c->chunk_size;
    return NULL;
}

static float *float_field(ModelConfig *c, const char *key) {
    if (!strcmp(key, "dt_min")) return &c->dt_min;
    if (!strcmp(key, "dt_max")) return &c->dt_max;
    if (!strcmp(key, "dt_init_floor")) return &c->dt_init_floor;
    if (!strcmp(key, "norm_eps")) return &c->norm_eps;
    return NULL;
}

static const IntFieldRange *int_field_range(const char *key) {
    for (int i = 0; i < COUNT(INT_FIELDS); i++) if (!strcmp(key, INT_FIELDS[i].name)) return &INT_FIELDS[i];
    return NULL;
}

static const FloatFieldRange *float_field_range(const char *key) {
    for (int i = 0; i < COUNT(FLOAT_FIELDS); i++) if (!strcmp(key, FLOAT_FIELDS[i].name)) return &FLOAT_FIELDS[i];
    return NULL;
}

static int known_field(const char *key) {
    if (int_field_range(key)) return 1;
    for (int i = 0; i < COUNT(OPTIONAL_FIELDS); i++) if (!strcmp(key, OPTIONAL_FIELDS[i])) return 1;
    return 0;
}

int config_parse(ModelConfig *config, const char *json_text, const char *source, char *err, size_t errlen) {
    memset(config, 0, sizeof(*config));
    config->a_structure = A_SCALAR;
    config->dt_min = 1e-3f;
    config->dt_max = 0.1f;
    config->dt_init_floor = 1e-4f;
    config->norm_eps = 1e-5f;
    cJSON *root = cJSON_Parse(json_text);
    if (root == NULL || !cJSON_IsObject(root)) {
        const char *where = cJSON_GetErrorPtr();
        snprintf(err, errlen, "%s: not a JSON object (parse error near '%.20s')", source, where ? where : "?");
        cJSON_Delete(root);
        return 1;
    }
    int status = 0;
    for (cJSON *item = root->child; item != NULL && status == 0; item = item->next) {
        const char *key = item->string;
        if (!known_field(key)) {
            snprintf(err, errlen, "%s: unknown field '%s'", source, key);
            status = 1;
        } else if (int_field(config, key)) {
            const IntFieldRange *r = int_field_range(key);
            double v = item->valuedouble;
            /* the range is checked on the double: converting an out-of-range one to int is undefined */
            if (!cJSON_IsNumber(item) || !(v >= (double)r->lo && v <= (double)r->hi) || v != floor(v)) {
                char got[64];
                if (cJSON_IsNumber(item)) snprintf(got, sizeof(got), "%.15g", v);
                else snprintf(got, sizeof(got), "a JSON %s", cJSON_IsString(item) ? "string" : "non-number");
                snprintf(err, errlen, "%s: field '%s' must be an integer in [%ld, %ld] (got %s)", source, key, r->lo,
                         r->hi, got);
                status = 1;
            } else {
                *int_field(config, key) = (int)v;
            }
        } else if (float_field(config, key)) {
            const FloatFieldRange *r = float_field_range(key);
            double v = item->valuedouble;
            /* checked as the float it becomes: 1e-46 is positive, but 0 as a float */
            float f = cJSON_IsNumber(item) && v >= -FLT_MAX && v <= FLT_MAX ? (float)v : NAN;
            if (!(f >= (float)r->lo && f <= (float)r->hi)) {
                char got[64];
                if (cJSON_IsNumber(item)) snprintf(got, sizeof(got), "%.9g", v);
                else snprintf(got, sizeof(got), "a JSON %s", cJSON_IsString(item) ? "string" : "non-number");
                snprintf(err, errlen, "%s: field '%s' must be a number in [%g, %g] (got %s)", source, key, r->lo, r->hi,
                         got);
                status = 1;
            } else {
                *float_field(config, key) = f;
            }
        } else if (!strcmp(key, "a_structure")) {
            const char *s = cJSON_GetStringValue(item);
            if (s && !strcmp(s, "scalar")) config->a_structure = A_SCALAR;
            else if (s && !strcmp(s, "diagonal")) config->a_structure = A_DIAGONAL;
            else {
                snprintf(err, errlen, "%s: field 'a_structure' must be \"scalar\" or \"diagonal\"", source);
                status = 1;
            }
        } else if (!strcmp(key, "name")) {
            const char *s = cJSON_GetStringValue(item);
            if (s == NULL) { snprintf(err, errlen, "%s: field 'name' must be a string", source); status = 1; }
            else snprintf(config->name, sizeof(config->name), "%s", s);
        } else if (!strcmp(key, "tokenizer")) {
            const char *s = cJSON_GetStringValue(item);
            if (s == NULL || strlen(s) >= sizeof(config->tokenizer)) {
                snprintf(err, errlen, "%s: field 'tokenizer' must be a string of at most %zu characters", source,
                         sizeof(config->tokenizer) - 1);
                status = 1;
            } else {
                snprintf(config->tokenizer, sizeof(config->tokenizer), "%s", s);
            }
        }
    }
    for (int i = 0; i < COUNT(INT_FIELDS) && status == 0; i++) {
        if (cJSON_GetObjectItemCaseSensitive(root, INT_FIELDS[i].name) == NULL) {
            snprintf(err, errlen, "%s: missing field '%s'", source, INT_FIELDS[i].name);
            status = 1;
        }
    }
    cJSON_Delete(root);
    if (status == 0) {
        char inner[384];
        if (config_finalize(config, inner, sizeof(inner))) {
            snprintf(err, errlen, "%s: %s", source, inner);
            status = 1;
        }
    }
    return status;
}

int config_finalize(ModelConfig *c, char *err, size_t errlen) {
    for (int i = 0; i < COUNT(INT_FIELDS); i++) {
        const IntFieldRange *r = &INT_FIELDS[i];
        int v = *int_field(c, r->name);
        if (v < r->lo || v > r->hi) {
            snprintf(err, errlen, "field '%s' must be an integer in [%ld, %ld] (got %d)", r->name, r->lo, r->hi, v);
            return 1;
        }
    }
    for (int i = 0; i < COUNT(FLOAT_FIELDS); i++) {
        const FloatFieldRange *r = &FLOAT_FIELDS[i];
        float v = *float_field(c, r->name);
        if (!(v >= (float)r->lo && v <= (float)r->hi)) {
            snprintf(err, errlen, "field '%s' must be a number in [%g, %g] (got %g)", r->name, r->lo, r->hi, (double)v);
            return 1;
        }
    }
    if (c->dt_min > c->dt_max) {
        snprintf(err, errlen, "field 'dt_min' (%g) must not exceed 'dt_max' (%g)", (double)c->dt_min, (double)c->dt_max);
        return 1;
    }
    /* the fields are in range, so these products fit in a long; each is bounded before it is used further */
    long d_inner = (long)c->expand * c->d_model, gn = (long)c->ngroups * c->d_state;
    if (d_inner > CONFIG_MAX_INNER) {
        snprintf(err, errlen, "d_inner = expand*d_model = %d*%d = %ld exceeds %ld: lower 'expand' or 'd_model'", c->expand,
                 c->d_model, d_inner, CONFIG_MAX_INNER);
        return 1;
    }
    if (gn > CONFIG_MAX_INNER) {
        snprintf(err, errlen, "ngroups*d_state = %d*%d = %ld exceeds %ld: lower 'ngroups' or 'd_state'", c->ngroups,
                 c->d_state, gn, CONFIG_MAX_INNER);
        return 1;
    }
    c->d_inner = (int)d_inner;
    if (c->d_inner % c->headdim != 0) {
        snprintf(err, errlen, "field 'headdim' (%d) must divide d_inner = expand*d_model = %d", c->headdim, c->d_inner);
        return 1;
    }
    c->nheads = c->d_inner / c->headdim;
    if (c->nheads % c->ngroups != 0) {
        snprintf(err, errlen, "field 'ngroups' (%d) must divide nheads = %d", c->ngroups, c->nheads);
        return 1;
    }
    c->conv_dim = (int)(d_inner + 2 * gn);
    c->d_in_proj = (int)(2 * d_inner + 2 * gn + c->nheads);
    long multiple = c->pad_vocab_multiple;
    c->padded_vocab = (int)((c->vocab_size + multiple - 1) / multiple * multiple);
    c->a_per_head = c->a_structure == A_DIAGONAL ? c->d_state : 1;
    return 0;
}

void config_load(ModelConfig *config, const char *path) {
    char err[8192];
    char *text = read_text_file_limited(path, "config", CONFIG_MAX_FILE_BYTES, NULL, err, sizeof(err));
    if (text == NULL) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    int status = config_parse(config, text, path, err, sizeof(err));
    free(text);
    if (status) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}

char *config_to_json(const ModelConfig *c) {
    cJSON *root = cJSON_CreateObject();
    if (c->name[0]) cJSON_AddStringToObject(root, "name", c->name);
    if (c->tokenizer[0]) cJSON_AddStringToObject(root, "tokenizer", c->tokenizer);
    ModelConfig copy = *c;
    for (int i = 0; i < COUNT(INT_FIELDS); i++)
        cJSON_AddNumberToObject(root, INT_FIELDS[i].name, *int_field(&copy, INT_FIELDS[i].name));
    cJSON_AddStringToObject(root, "a_structure", c->a_structure == A_DIAGONAL ? "diagonal" : "scalar");
    cJSON_AddNumberToObject(root, "dt_min", c->dt_min);
    cJSON_AddNumberToObject(root, "dt_max", c->dt_max);
    cJSON_AddNumberToObject(root, "dt_init_floor", c->dt_init_floor);
    cJSON_AddNumberToObject(root, "norm_eps", c->norm_eps);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

int config_equal(const ModelConfig *a, const ModelConfig *b) {
    ModelConfig x = *a, y = *b;
    for (int i = 0; i < COUNT(INT_FIELDS); i++)
        if (*int_field(&x, INT_FIELDS[i].name) != *int_field(&y, INT_FIELDS[i].name)) return 0;
    return x.a_structure == y.a_structure && x.norm_eps == y.norm_eps;
}

void config_print(const ModelConfig *c) {
    printf("+-----------------------+----------------------------------------------------+\n");
    printf("| model                 | %-50s |\n", c->name[0] ? c->name : "(unnamed)");
    printf("| a_structure           | %-50s |\n", c->a_structure == A_DIAGONAL ? "diagonal (SSD-Mamba)" : "scalar (Mamba-2)");
    printf("| d_model / n_layer     | %-6d / %-41d |\n", c->d_model, c->n_layer);
    printf("| vocab (padded)        | %-6d (%d)%*s |\n", c->vocab_size, c->padded_vocab, 41 - snprintf(NULL, 0, "%d", c->padded_vocab), "");
    printf("| d_inner / nheads      | %-6d / %-41d |\n", c->d_inner, c->nheads);
    printf("| headdim / d_state     | %-6d / %-41d |\n", c->headdim, c->d_state);
    printf("| ngroups / d_conv      | %-6d / %-41d |\n", c->ngroups, c->d_conv);
    printf("| chunk_size            | %-50d |\n", c->chunk_size);
    printf("+-----------------------+----------------------------------------------------+\n");
}

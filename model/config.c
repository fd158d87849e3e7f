#include "model/config.h"
#include "common/utils.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fields a config must have; the optional ones below take the reference defaults. */
static const char *REQUIRED_INT_FIELDS[] = {"d_model", "n_layer", "vocab_size", "pad_vocab_multiple", "d_state",
                                            "d_conv",  "expand",  "headdim",    "ngroups",            "chunk_size"};
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

static int known_field(const char *key) {
    for (int i = 0; i < COUNT(REQUIRED_INT_FIELDS); i++) if (!strcmp(key, REQUIRED_INT_FIELDS[i])) return 1;
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
            double v = item->valuedouble;
            if (!cJSON_IsNumber(item) || v != (double)(int)v) {
                snprintf(err, errlen, "%s: field '%s' must be an integer", source, key);
                status = 1;
            } else {
                *int_field(config, key) = (int)v;
            }
        } else if (float_field(config, key)) {
            if (!cJSON_IsNumber(item) || !(item->valuedouble > 0) || !isfinite((float)item->valuedouble)) {
                snprintf(err, errlen, "%s: field '%s' must be a positive finite number", source, key);
                status = 1;
            } else {
                *float_field(config, key) = (float)item->valuedouble;
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
    for (int i = 0; i < COUNT(REQUIRED_INT_FIELDS) && status == 0; i++) {
        if (cJSON_GetObjectItemCaseSensitive(root, REQUIRED_INT_FIELDS[i]) == NULL) {
            snprintf(err, errlen, "%s: missing field '%s'", source, REQUIRED_INT_FIELDS[i]);
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
    const char *names[] = {"d_model", "n_layer", "vocab_size", "pad_vocab_multiple", "d_state",
                           "d_conv",  "expand",  "headdim",    "ngroups",            "chunk_size"};
    for (int i = 0; i < COUNT(names); i++) {
        if (*int_field(c, names[i]) <= 0) {
            snprintf(err, errlen, "field '%s' must be positive (got %d)", names[i], *int_field(c, names[i]));
            return 1;
        }
    }
    if (c->dt_min > c->dt_max) { snprintf(err, errlen, "field 'dt_min' must not exceed 'dt_max'"); return 1; }
    c->d_inner = c->expand * c->d_model;
    if (c->d_inner % c->headdim != 0) {
        snprintf(err, errlen, "field 'headdim' (%d) must divide d_inner = expand*d_model = %d", c->headdim, c->d_inner);
        return 1;
    }
    c->nheads = c->d_inner / c->headdim;
    if (c->nheads % c->ngroups != 0) {
        snprintf(err, errlen, "field 'ngroups' (%d) must divide nheads = %d", c->ngroups, c->nheads);
        return 1;
    }
    c->conv_dim = c->d_inner + 2 * c->ngroups * c->d_state;
    c->d_in_proj = 2 * c->d_inner + 2 * c->ngroups * c->d_state + c->nheads;
    c->padded_vocab = (c->vocab_size + c->pad_vocab_multiple - 1) / c->pad_vocab_multiple * c->pad_vocab_multiple;
    c->a_per_head = c->a_structure == A_DIAGONAL ? c->d_state : 1;
    return 0;
}

void config_load(ModelConfig *config, const char *path) {
    char *text = read_text_file(path, NULL);
    if (text == NULL) {
        fprintf(stderr, "error: cannot read config '%s'\n", path);
        exit(1);
    }
    char err[512];
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
    for (int i = 0; i < COUNT(REQUIRED_INT_FIELDS); i++)
        cJSON_AddNumberToObject(root, REQUIRED_INT_FIELDS[i], *int_field(&copy, REQUIRED_INT_FIELDS[i]));
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
    for (int i = 0; i < COUNT(REQUIRED_INT_FIELDS); i++)
        if (*int_field(&x, REQUIRED_INT_FIELDS[i]) != *int_field(&y, REQUIRED_INT_FIELDS[i])) return 0;
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

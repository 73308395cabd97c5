/* libFuzzer target for the model config parser (config.json, HF LlamaConfig keys).
 * Accepted inputs must describe a valid model, and writing the config and parsing it again must
 * give the same model; rejections are one line. */
#include "core/error.h"
#include "model/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    llama_config c, back;
    loqt_clear_error();
    if (config_parse(&c, (const char *)data, size, "fuzz.json")) {
        if (strchr(loqt_last_error(), '\n') || !loqt_last_error()[0]) abort();
        return 0;
    }
    if (config_validate(&c)) abort();
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    config_write_json(&c, m);
    fclose(m);
    if (config_parse(&back, text, len, "again")) {
        fprintf(stderr, "a written config does not parse: %s\n", loqt_last_error());
        abort();
    }
    if (back.hidden_size != c.hidden_size || back.intermediate_size != c.intermediate_size ||
        back.num_hidden_layers != c.num_hidden_layers || back.num_attention_heads != c.num_attention_heads ||
        back.vocab_size != c.vocab_size || back.max_position_embeddings != c.max_position_embeddings)
        abort();
    free(text);
    return 0;
}

/* safetensors files: 8-byte little-endian header length N, N bytes of JSON header, data buffer.
 * The reader maps the file and validates everything before use: header size (<= 100 MB),
 * JSON shape, dtypes, shapes against byte ranges, offsets inside the buffer, no overlaps, and the
 * buffer exactly covered.  A model directory in Hugging Face layout (one model.safetensors, or
 * shards listed by model.safetensors.index.json) opens as one st_file (st_open_dir).  Reads of a
 * mapped file hand each large tensor's pages back to the kernel once converted, so a checkpoint
 * read tensor by tensor is not held a second time in memory beside the model it fills.  The
 * writer writes to "<path>.tmp", fsyncs and renames, so a crash never leaves a half-written file
 * under the final name. */
#ifndef LOQT_SAFETENSORS_H
#define LOQT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_I8, ST_U8, ST_I16, ST_U16, ST_I32, ST_I64, ST_NDTYPE } st_dtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t offset; /* into the data buffer (of its shard) */
    size_t nbytes;
    int used;      /* looked up by st_find since the file was opened */
    const uint8_t *bytes; /* its data, valid while the file is open */
    const char *file;     /* the shard that holds it (a directory's tensor), else NULL */
} st_tensor;

typedef struct st_file {
    void *map;
    size_t map_size;
    const uint8_t *data; /* start of the data buffer (none for a sharded directory) */
    size_t data_size;
    st_tensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_values; /* __metadata__ */
    int n_meta;
    int mapped;              /* the tensors' bytes are file mappings (pages may be released) */
    struct st_file *shards;  /* st_open_dir of a sharded directory: the open shards */
    int n_shards;
} st_file;

const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);

/* 0 on success; -1 with an error naming the file and the problem. */
int st_open(st_file *f, const char *path);
/* The same checks on a file already in memory, buf[0..size), which must outlive f (not copied,
 * not freed by st_close); `name` is used in messages.  For tests and fuzzing. */
int st_open_memory(st_file *f, const char *name, const void *buf, size_t size);
void st_close(st_file *f);

/* The weights of a model directory in Hugging Face layout as one st_file: DIR/model.safetensors,
 * or, when DIR/model.safetensors.index.json exists, the shards its "weight_map" names (tensor
 * name -> a file in DIR).  Each shard is mapped and checked as st_open does; the index must map
 * every tensor to the shard that holds it, and every tensor of the shards must be in the index.
 * st_find, st_read_*, st_first_unused and st_check_finite then work across the shards (messages
 * about a tensor name its shard).  -1 with a one-line error naming the file and the problem. */
int st_open_dir(st_file *f, const char *dir);

/* A parsed model.safetensors.index.json: n tensor names, each with the index of its shard in
 * shards[0..n_shards) (distinct plain file names, in order of first mention). */
typedef struct {
    int n, n_shards;
    char **names;
    int *shard;
    char **shards;
} st_index;
/* Parses index JSON text: an object with "weight_map" (a non-empty object of tensor name ->
 * shard file name; a name must not repeat, and a shard must be a plain file name, no '/' and not
 * "." or "..") and optionally "metadata" (an object, not read); other keys are ignored.  `what`
 * names the file in messages.  0, or -1 with a one-line error. */
int st_index_parse(st_index *ix, const char *json, size_t len, const char *what);
void st_index_free(st_index *ix);
const st_tensor *st_find(const st_file *f, const char *name);
/* The first tensor no st_find has asked for (a loader checks it read the whole file), or NULL. */
const char *st_first_unused(const st_file *f);
const void *st_data(const st_file *f, const st_tensor *t);
const char *st_meta(const st_file *f, const char *key); /* NULL if absent */

/* Copies tensor `name` into dst as float32, converting from F32, F16 or BF16.  The stored shape
 * must equal shape[0..ndim) exactly; -1 with a clear error otherwise (missing, wrong shape/dtype). */
int st_read_f32(const st_file *f, const char *name, float *dst, int ndim, const int64_t *shape);
/* Exact conversions of one value (subnormals, infinities, signed zeros, NaN payloads kept). */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t h);
/* Copies raw bytes of tensor `name`; dtype and shape must match exactly. */
int st_read_raw(const st_file *f, const char *name, void *dst, st_dtype dtype, int ndim,
                const int64_t *shape);

/* Non-finite (NaN, inf) values in nbytes of floating-point data (F32, F16, BF16; 0 otherwise). */
size_t st_count_nonfinite(st_dtype t, const void *data, size_t nbytes);
/* 0 when every floating-point tensor of f is finite; else -1 with an error naming the first
 * tensor that is not and how many of its values are NaN or infinite. */
int st_check_finite(const st_file *f);

typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
void st_writer_meta(st_writer *w, const char *key, const char *value);
/* Records a tensor; `data` is not copied and must stay valid until st_writer_write returns. */
void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
/* The recorded tensor `name`: 0 with its dtype, rank and shape (any may be NULL), or -1. */
int st_writer_find(const st_writer *w, const char *name, st_dtype *dtype, int *ndim, int64_t *shape);
int st_writer_count(const st_writer *w);
/* st_check_finite for the tensors recorded so far. */
int st_writer_check_finite(const st_writer *w);
/* Writes the file atomically (tmp + fsync + rename).  0 on success, -1 with error. */
int st_writer_write(st_writer *w, const char *path);
void st_writer_free(st_writer *w);

#endif

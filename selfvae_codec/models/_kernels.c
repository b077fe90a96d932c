/* Compiled kernels of the exact models: the same integers as the torch code they
 * replace, which stays the reference and the fallback where this extension is not
 * built. Integer arithmetic only, so every compiler and CPU gives the same numbers.
 *
 * mixture_counts: the probability tables (ExactLogisticMixture.mixture_counts).
 *
 * For each row n and each run k of values between two bin edges:
 *     mixed[n, e] = sum_m weights[n, m] * SIGMOID[clamp(floor(((edges[n, e] - mean[n, m])
 *                   * inv_scales[n, m] + offset) / 2^shift), 0, last)]
 *     counts[n, k] = mixed[n, k + 1] - mixed[n, k]
 * The products stay below 2^63 (edges below 2^37, inverse scales below 2^27); they are
 * formed in unsigned arithmetic, which wraps as torch's int64 does, so that no input
 * makes the C undefined. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* floor(a / 2^s): the right shift of a negative number is implementation-defined in C. */
static inline int64_t floor_shift(int64_t a, int s) { return a >= 0 ? a >> s : ~((~a) >> s); }

/* The sigmoid table's index for edge - mean at an inverse scale, unclamped. */
static inline int64_t sigmoid_index(int64_t edge, int64_t mean, int64_t inv_scale, int64_t offset, int shift) {
    return floor_shift((int64_t)(((uint64_t)edge - (uint64_t)mean) * (uint64_t)inv_scale + (uint64_t)offset), shift);
}

/* `mixed` is scratch space for edge_count numbers. A component whose CDF is the same
 * at every edge of a row (saturated at 0 or at 1 over the row's whole range: the CDF
 * grows with the edge, as inverse scales are positive) adds the same number to every
 * mixed[e] and so nothing to the counts: it is skipped. */
static void mixture_counts(const int64_t *mean, const int64_t *inv_scales, const int64_t *weights,
                           const int64_t *edges, int64_t edge_row_stride, const int32_t *sigmoid,
                           int64_t last, int64_t offset, int shift, int64_t rows, int64_t components,
                           int64_t edge_count, int64_t *counts, int64_t *mixed) {
    for (int64_t n = 0; n < rows; n++) {
        const int64_t *row_edges = edges + n * edge_row_stride;
        int64_t lowest = row_edges[0], highest = row_edges[0];
        for (int64_t e = 0; e < edge_count; e++) {
            mixed[e] = 0;
            lowest = row_edges[e] < lowest ? row_edges[e] : lowest;
            highest = row_edges[e] > highest ? row_edges[e] : highest;
        }
        for (int64_t m = 0; m < components; m++) {
            int64_t mu = mean[n * components + m], inv = inv_scales[n * components + m];
            int64_t weight = weights[n * components + m];
            if (weight == 0) continue;
            if (inv > 0 && (sigmoid_index(lowest, mu, inv, offset, shift) >= last ||
                            sigmoid_index(highest, mu, inv, offset, shift) <= 0))
                continue;
            for (int64_t e = 0; e < edge_count; e++) {
                int64_t index = sigmoid_index(row_edges[e], mu, inv, offset, shift);
                index = index < 0 ? 0 : (index > last ? last : index);
                mixed[e] += weight * sigmoid[index];
            }
        }
        int64_t *row_counts = counts + n * (edge_count - 1);
        for (int64_t e = 1; e < edge_count; e++) row_counts[e - 1] = mixed[e] - mixed[e - 1];
    }
}

/* rescale: an exact convolution's float64 sums (integers below 2^53, [B, C, H, W] with
 * unit column stride) to activations: (sum + bias[c]) >> shift[c], saturated at +-limit,
 * into a contiguous int64 tensor (ExactConv.forward); the planes (b, c) numbered
 * b * C + c from first_plane to stop_plane - 1. */
static void rescale(const double *sums, int64_t batch_stride, int64_t channel_stride, int64_t row_stride,
                    const int64_t *bias, const int64_t *shift, int64_t limit, int64_t channels, int64_t height,
                    int64_t width, int64_t first_plane, int64_t stop_plane, int64_t *out) {
    for (int64_t plane = first_plane; plane < stop_plane; plane++) {
        int64_t b = plane / channels, c = plane % channels;
        int s = (int)shift[c];
        for (int64_t y = 0; y < height; y++) {
            const double *row = sums + b * batch_stride + c * channel_stride + y * row_stride;
            int64_t *target = out + (plane * height + y) * width;
            for (int64_t x = 0; x < width; x++) {
                int64_t value = floor_shift((int64_t)row[x] + bias[c], s);
                target[x] = value < -limit ? -limit : (value > limit ? limit : value);
            }
        }
    }
}

/* interpolate: the function `table` tabulates (entry i at start + i * 2^fraction_bits
 * in x's units; `entries` of them, then one more copy of the last) at each of n values
 * x, linear between entries, clamped at the ends (fixed_point._interpolate). */
static void interpolate(const int64_t *x, const int64_t *table, int64_t entries, int64_t start, int fraction_bits,
                        int64_t n, int64_t *out) {
    int64_t top = (entries - 1) << fraction_bits;
    for (int64_t i = 0; i < n; i++) {
        int64_t offset = x[i] - start;
        offset = offset < 0 ? 0 : (offset > top ? top : offset);
        int64_t index = offset >> fraction_bits, low = table[index];
        out[i] = low + floor_shift((table[index + 1] - low) * (offset - (index << fraction_bits)), fraction_bits);
    }
}

/* elu: x where x > 0, else table[min(-x, last)] (fixed_point.elu), n int64 values. */
static void elu(const int64_t *x, const int64_t *table, int64_t last, int64_t n, int64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0 ? x[i] : table[-x[i] < last ? -x[i] : last];
}

static void *pointer(PyObject *address) { return PyLong_AsVoidPtr(address); }

/* mixture_counts(mean, inv_scales, weights, edges, edge_row_stride, sigmoid, last, offset,
 * shift, rows, components, edge_count, counts): the objects are the data addresses of
 * contiguous tensors, all int64 but the int32 sigmoid table (mean, inv_scales,
 * weights: [rows, components]; edges: [rows, edge_count] with a row stride of
 * edge_count, or [edge_count] with 0; counts: [rows, edge_count - 1], written). Every
 * kernel releases the GIL while it runs. */
static PyObject *py_mixture_counts(PyObject *self, PyObject *args) {
    PyObject *mean, *inv_scales, *weights, *edges, *sigmoid, *counts;
    long long edge_row_stride, last, offset, rows, components, edge_count;
    int shift;
    if (!PyArg_ParseTuple(args, "OOOOLOLLiLLLO", &mean, &inv_scales, &weights, &edges, &edge_row_stride,
                          &sigmoid, &last, &offset, &shift, &rows, &components, &edge_count, &counts))
        return NULL;
    void *p[6] = {pointer(mean), pointer(inv_scales), pointer(weights), pointer(edges), pointer(sigmoid),
                  pointer(counts)};
    if (PyErr_Occurred()) return NULL;
    if (edge_count < 1 || shift < 1 || shift > 62) {
        PyErr_SetString(PyExc_ValueError, "mixture_counts: edge_count >= 1 and 1 <= shift <= 62");
        return NULL;
    }
    int64_t *mixed = PyMem_RawMalloc((size_t)edge_count * sizeof(int64_t));
    if (mixed == NULL) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    mixture_counts(p[0], p[1], p[2], p[3], edge_row_stride, p[4], last, offset, shift, rows, components,
                   edge_count, p[5], mixed);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(mixed);
    Py_RETURN_NONE;
}

/* rescale(sums, batch_stride, channel_stride, row_stride, bias, shift, limit, channels,
 * height, width, first_plane, stop_plane, out): strides in elements. */
static PyObject *py_rescale(PyObject *self, PyObject *args) {
    PyObject *sums, *bias, *shift, *out;
    long long batch_stride, channel_stride, row_stride, limit, channels, height, width, first_plane, stop_plane;
    if (!PyArg_ParseTuple(args, "OLLLOOLLLLLLO", &sums, &batch_stride, &channel_stride, &row_stride, &bias,
                          &shift, &limit, &channels, &height, &width, &first_plane, &stop_plane, &out))
        return NULL;
    void *p[4] = {pointer(sums), pointer(bias), pointer(shift), pointer(out)};
    if (PyErr_Occurred()) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rescale(p[0], batch_stride, channel_stride, row_stride, p[1], p[2], limit, channels, height, width,
            first_plane, stop_plane, p[3]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* interpolate(x, table, entries, start, fraction_bits, n, out) */
static PyObject *py_interpolate(PyObject *self, PyObject *args) {
    PyObject *x, *table, *out;
    long long entries, start, n;
    int fraction_bits;
    if (!PyArg_ParseTuple(args, "OOLLiLO", &x, &table, &entries, &start, &fraction_bits, &n, &out)) return NULL;
    void *p[3] = {pointer(x), pointer(table), pointer(out)};
    if (PyErr_Occurred()) return NULL;
    if (fraction_bits < 0 || fraction_bits > 62 || entries < 1) {
        PyErr_SetString(PyExc_ValueError, "interpolate: 0 <= fraction_bits <= 62 and entries >= 1");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    interpolate(p[0], p[1], entries, start, fraction_bits, n, p[2]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* elu(x, table, last, n, out) */
static PyObject *py_elu(PyObject *self, PyObject *args) {
    PyObject *x, *table, *out;
    long long last, n;
    if (!PyArg_ParseTuple(args, "OOLLO", &x, &table, &last, &n, &out)) return NULL;
    void *p[3] = {pointer(x), pointer(table), pointer(out)};
    if (PyErr_Occurred()) return NULL;
    Py_BEGIN_ALLOW_THREADS
    elu(p[0], p[1], last, n, p[2]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"mixture_counts", py_mixture_counts, METH_VARARGS, "Counts of runs of values under an exact logistic mixture."},
    {"rescale", py_rescale, METH_VARARGS, "An exact convolution's sums to activations."},
    {"elu", py_elu, METH_VARARGS, "The ELU of activations by its table."},
    {"interpolate", py_interpolate, METH_VARARGS, "A function table, linearly interpolated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }

// pybind11 bindings of the CPU core as the private module mdlsae._C. Buffers arrive as numpy
// arrays or as raw addresses of torch tensors (so bfloat16 needs no numpy dtype); results go
// back as numpy arrays that take ownership of the C++ vectors without copying.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <mutex>
#include <optional>

#include "bind/flat_args.h"
#include "codec/chunk_codec.h"
#include "codec/flat_codec.h"
#include "codec/tables.h"
#include "common/check.h"
#include "cpu/cooccur.h"
#include "cpu/histogram.h"
#include "cpu/parallel.h"
#include "cpu/select_quantize.h"

namespace py = pybind11;
using namespace mdlsae;

namespace {

template <typename T, typename A>
py::array_t<T> to_numpy(std::vector<T, A>&& v) {
  auto* heap = new std::vector<T, A>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T, A>*>(p); });
  return py::array_t<T>({py::ssize_t(heap->size())}, {py::ssize_t(sizeof(T))}, heap->data(), owner);
}

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

template <typename T, typename A>
std::vector<T> to_vector(const A& a) {
  return std::vector<T>(a.data(), a.data() + a.size());
}

// The counts of a .mdl header, the coding tables derived from them, and the encoder's and the
// decoder's forms of those tables, each built once on first use (a file is coded in many calls).
struct Model {
  struct Lazy {
    std::once_flag enc_once, dec_once;
    codec::EncoderTables enc;
    codec::DecoderTables dec;
  };
  codec::Counts counts;
  codec::CodecTables tables;
  std::shared_ptr<Lazy> lazy = std::make_shared<Lazy>();

  const codec::EncoderTables& encoder() const {
    std::call_once(lazy->enc_once, [&] { lazy->enc = codec::build_encoder_tables(tables); });
    return lazy->enc;
  }
  const codec::DecoderTables& decoder() const {
    std::call_once(lazy->dec_once, [&] { lazy->dec = codec::build_decoder_tables(tables); });
    return lazy->dec;
  }
};

codec::CodesView codes_view(const I64Array& row_ptr, const I32Array& index, const I32Array& q) {
  MDLSAE_CHECK_ARG(row_ptr.ndim() == 1 && row_ptr.size() >= 1, "row_ptr must be 1-D with at least one entry");
  const int64_t rows = row_ptr.size() - 1;
  MDLSAE_CHECK_ARG(row_ptr.data()[0] == 0 && row_ptr.data()[rows] == index.size() && index.size() == q.size(),
                   "codes are inconsistent: row_ptr ends at ", row_ptr.data()[rows], ", index has ",
                   index.size(), " entries, q has ", q.size());
  for (int64_t r = 0; r < rows; ++r)
    MDLSAE_CHECK_ARG(row_ptr.data()[r] <= row_ptr.data()[r + 1], "row_ptr decreases at row ", r);
  return {rows, row_ptr.data(), index.data(), q.data()};
}

template <typename T>
const T* feature_vector(const std::optional<py::array_t<T, py::array::c_style | py::array::forcecast>>& a,
                        int64_t d_sae, const char* name) {
  if (!a) return nullptr;
  MDLSAE_CHECK_ARG(a->ndim() == 1 && a->shape(0) == d_sae, name, " must have shape [", d_sae,
                   "], got ndim ", a->ndim(), " size ", a->size());
  return a->data();
}

// The host build of the device coder's steps (codec/flat_codec.h), for bind::def_flat_coder.
struct HostFlatCoder {
  static void place(const codec::FlatEncodeArgs& a, codec::StreamStatus* status, uintptr_t) {
    codec::flat_place_siblings_all(a, status);
  }
  static void bounds(const codec::FlatEncodeArgs& a, int64_t* bound, uintptr_t) { codec::flat_stream_bounds(a, bound); }
  static void encode(const codec::FlatEncodeArgs& a, const int64_t* word_off, uint32_t* words, uint32_t* states,
                     int64_t* n_words, codec::StreamStatus* status, uintptr_t) {
    codec::flat_encode_streams(a, word_off, words, states, n_words, status);
  }
  static void write(const codec::FlatEncodeArgs& a, const int64_t* word_off, const uint32_t* words,
                    const uint32_t* states, const int64_t* n_words, const int64_t* byte_off, uint8_t* out, uintptr_t) {
    codec::flat_write_streams(a, word_off, words, states, n_words, byte_off, out);
  }
  static void decode_begins(const codec::FlatDecodeArgs& a, codec::DecodeState* st, uintptr_t) {
    codec::flat_decode_begins(a, st);
  }
  static void decode_levels(const codec::FlatDecodeArgs& a, int32_t level, bool write, codec::DecodeState* st,
                            uintptr_t) {
    codec::flat_decode_levels(a, level, write, st);
  }
  static void decode_ends(const codec::FlatDecodeArgs& a, const codec::DecodeState* st, codec::StreamStatus* status,
                          uintptr_t) {
    codec::flat_decode_ends(a, st, status);
  }
};

std::string compiler() {
#if defined(__clang__)
  return concat("clang ", __clang_major__, ".", __clang_minor__, ".", __clang_patchlevel__);
#elif defined(__GNUC__)
  return concat("gcc ", __GNUC__, ".", __GNUC_MINOR__, ".", __GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
  return concat("msvc ", _MSC_VER);
#else
  return "unknown";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mdlsae native CPU core (private; use the mdlsae package)";
  m.attr("MAX_CHUNK_ROWS") = codec::kMaxChunkRows;
  m.attr("MIN_FEATURE_BYTES") = codec::kMinFeatureBytes;

  m.def("build_info", [] {
    py::dict d;
    d["cpu_kernels"] = py::make_tuple("select_quantize", "histogram", "rans_encode", "rans_decode");
    d["compiler"] = compiler();
    d["cplusplus"] = long(__cplusplus);
    d["hardware_threads"] = int(std::thread::hardware_concurrency());
    return d;
  });
  // Gives freed heap memory back to the system. Between large, short-lived buffers (an SAE's
  // latents) glibc keeps the heap's top pinned by small live objects: evaluating 30 SAEs in
  // one process grew by ~400 MB per SAE until malloc_trim. A no-op without glibc.
  m.def("trim_memory", [] {
#if defined(__GLIBC__)
    return malloc_trim(0) != 0;
#else
    return false;
#endif
  });
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));

  py::class_<Histogram>(m, "Histogram")
      .def(py::init<int64_t, int32_t>(), py::arg("d_sae"), py::arg("dense_cap") = 64)
      .def_property_readonly("d_sae", &Histogram::d_sae)
      .def_property_readonly("rows", &Histogram::rows)
      .def_property_readonly("dense_cap", &Histogram::dense_cap)
      .def("merge", py::overload_cast<const Histogram&>(&Histogram::merge), py::arg("other"))
      .def(
          "add_codes",
          [](Histogram& h, I32Array index, I32Array q, int64_t rows) {
            MDLSAE_CHECK_ARG(index.size() == q.size(), "index has ", index.size(),
                             " entries but q has ", q.size());
            MDLSAE_CHECK_ARG(rows >= 0, "rows must be >= 0, got ", rows);
            h.add_codes(index.data(), q.data(), index.size(), rows);
          },
          py::arg("index"), py::arg("q"), py::arg("rows"))
      .def(
          "add_dense_counts",
          [](Histogram& h, py::array_t<uint32_t, py::array::c_style | py::array::forcecast> counts,
             int64_t rows) { h.add_dense_counts(counts.data(), counts.size(), rows); },
          py::arg("counts"), py::arg("rows"))
      .def("active_counts", [](const Histogram& h) { return to_numpy(h.active_counts()); })
      .def("to_csr", [](const Histogram& h) {
        HistogramCSR c = h.to_csr();
        return py::make_tuple(to_numpy(std::move(c.ptr)), to_numpy(std::move(c.q)),
                              to_numpy(std::move(c.count)));
      });

  py::class_<PairCounter>(m, "PairCounter")
      .def(py::init<int64_t, int64_t, int64_t>(), py::arg("d_sae"), py::arg("lo"), py::arg("hi"))
      .def_property_readonly("d_sae", &PairCounter::d_sae)
      .def_property_readonly("lo", &PairCounter::lo)
      .def_property_readonly("hi", &PairCounter::hi)
      .def(
          "counts",
          [](py::object self) {  // a writable view that keeps the counter alive
            auto& c = self.cast<PairCounter&>();
            return py::array_t<uint32_t>({py::ssize_t(c.hi() - c.lo()), py::ssize_t(c.d_sae())}, c.counts(), self);
          },
          "the [hi - lo, d_sae] pair counts, a writable view")
      .def(
          "add",
          [](PairCounter& c, I64Array row_ptr, I32Array index) {
            MDLSAE_CHECK_ARG(row_ptr.size() >= 1, "row_ptr must have at least one entry");
            py::gil_scoped_release nogil;
            c.add(row_ptr.data(), int64_t(row_ptr.size()) - 1, index.data(), int64_t(index.size()));
          },
          py::arg("row_ptr"), py::arg("index"))
      .def(
          "top_edges",
          [](const PairCounter& c, I64Array active, int64_t n_rows, int32_t k) {
            MDLSAE_CHECK_ARG(active.size() == c.d_sae(), "active has ", active.size(), " entries, expected d_sae = ",
                             c.d_sae());
            PairCounter::Edges e;
            {
              py::gil_scoped_release nogil;
              e = c.top_edges(active.data(), n_rows, k);
            }
            return py::make_tuple(to_numpy(std::move(e.i)), to_numpy(std::move(e.j)), to_numpy(std::move(e.bits)),
                                  to_numpy(std::move(e.both)));
          },
          py::arg("active"), py::arg("n_rows"), py::arg("k"));
  m.def(
      "max_forest",
      [](int64_t d_sae, I32Array i, I32Array j, py::array_t<double, py::array::c_style | py::array::forcecast> gain,
         I64Array active) {
        MDLSAE_CHECK_ARG(i.size() == j.size() && i.size() == gain.size(), "edge arrays differ in length: ", i.size(),
                         ", ", j.size(), ", ", gain.size());
        MDLSAE_CHECK_ARG(active.size() == d_sae, "active has ", active.size(), " entries, expected d_sae = ", d_sae);
        ForestOut f = max_forest(d_sae, i.data(), j.data(), gain.data(), i.size(), active.data());
        return py::make_tuple(to_numpy(std::move(f.parent)), to_numpy(std::move(f.edge)));
      },
      py::arg("d_sae"), py::arg("i"), py::arg("j"), py::arg("gain"), py::arg("active"));

  py::class_<Model>(m, "Model")
      .def(py::init([](uint64_t n_rows, I32Array parent, I64Array active, I64Array on, I32Array m_main,
                       I32Array m_off, I64Array hist_ptr, I32Array hist_q, I64Array hist_count, bool exclusive) {
             Model md;
             md.counts = {n_rows, exclusive, to_vector<int32_t>(parent), to_vector<int64_t>(active),
                          to_vector<int64_t>(on), to_vector<int32_t>(m_main), to_vector<int32_t>(m_off),
                          to_vector<int64_t>(hist_ptr), to_vector<int32_t>(hist_q),
                          to_vector<int64_t>(hist_count)};
             md.tables = codec::build_tables(md.counts);
             return md;
           }),
           py::arg("n_rows"), py::arg("parent"), py::arg("active"), py::arg("on"), py::arg("m_main"),
           py::arg("m_off"), py::arg("hist_ptr"), py::arg("hist_q"), py::arg("hist_count"),
           py::arg("exclusive") = false)
      .def_static(
          "unpack",
          [](py::bytes blob, int64_t d_sae, uint64_t n_rows, bool has_parents, bool exclusive) {
            std::string_view v = blob;
            Model md;
            md.counts = codec::unpack_counts(reinterpret_cast<const uint8_t*>(v.data()), v.size(), d_sae,
                                             n_rows, has_parents);
            md.counts.exclusive = exclusive;
            md.tables = codec::build_tables(md.counts);
            return md;
          },
          py::arg("blob"), py::arg("d_sae"), py::arg("n_rows"), py::arg("has_parents"), py::arg("exclusive") = false)
      .def("pack",
           [](const Model& md) {
             const auto b = codec::pack_counts(md.counts);
             return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
           })
      .def_property_readonly("d_sae", [](const Model& md) { return md.tables.d_sae; })
      .def_property_readonly("n_rows", [](const Model& md) { return md.tables.n_rows; })
      .def_property_readonly("exclusive", [](const Model& md) { return md.tables.exclusive; })
      // The tables as flat arrays for the device coder's driver (codec/flat_codec.h): integer
      // arrays, and the GapModel and EncSymbol arrays as their bytes; the encoder's and the
      // decoder's forms both.
      .def("flat_tables",
           [](const Model& md) {
             const auto& t = md.tables;
             const auto& e = md.encoder();
             const auto bytes_of = [](const auto& v) {
               const auto* p = reinterpret_cast<const uint8_t*>(v.data());
               return to_numpy(std::vector<uint8_t>(p, p + v.size() * sizeof(v[0])));
             };
             py::dict d;
             d["d_sae"] = t.d_sae;
             d["exclusive"] = t.exclusive;
             d["parent"] = to_numpy(std::vector<int32_t>(t.parent));
             d["kid_ptr"] = to_numpy(std::vector<int64_t>(t.kid_ptr));
             d["kids"] = to_numpy(std::vector<int32_t>(t.kids));
             d["rank"] = to_numpy(std::vector<int32_t>(t.rank));
             d["order"] = to_numpy(std::vector<int32_t>(t.order));
             d["main"] = bytes_of(t.main);
             d["off"] = bytes_of(t.off);
             d["vptr"] = to_numpy(std::vector<int64_t>(t.vptr));
             d["sym"] = to_numpy(std::vector<int32_t>(t.sym));
             d["start"] = to_numpy(std::vector<uint32_t>(t.start));
             d["freq"] = to_numpy(std::vector<uint32_t>(t.freq));
             d["gap_ptr"] = to_numpy(std::vector<int64_t>(e.gap_ptr));
             d["gap_sym"] = bytes_of(e.gap_sym);
             d["val_sym"] = bytes_of(e.val_sym);
             d["qmap_ptr"] = to_numpy(std::vector<int64_t>(e.qmap_ptr));
             d["q_lo"] = to_numpy(std::vector<int32_t>(e.q_lo));
             d["qmap"] = to_numpy(std::vector<int32_t>(e.qmap));
             d["q_span"] = to_numpy(std::vector<int64_t>(e.q_span));
             const auto& dt = md.decoder();
             d["lut_ptr"] = to_numpy(std::vector<int64_t>(dt.lut_ptr));
             d["lut"] = to_numpy(std::vector<int32_t>(dt.lut));
             d["lut_shift"] = to_numpy(std::vector<uint8_t>(dt.lut_shift));
             d["dec_gap_ptr"] = to_numpy(std::vector<int64_t>(dt.gap_ptr));
             d["gap_bounds"] = to_numpy(std::vector<uint32_t>(dt.gap_bounds));
             return d;
           })
      .def("counts", [](const Model& md) {
        const auto& c = md.counts;
        py::dict d;
        d["parent"] = to_numpy(std::vector<int32_t>(c.parent));
        d["exclusive"] = c.exclusive;
        d["active"] = to_numpy(std::vector<int64_t>(c.active));
        d["on"] = to_numpy(std::vector<int64_t>(c.on));
        d["m_main"] = to_numpy(std::vector<int32_t>(c.m_main));
        d["m_off"] = to_numpy(std::vector<int32_t>(c.m_off));
        d["hist_ptr"] = to_numpy(std::vector<int64_t>(c.hist_ptr));
        d["hist_q"] = to_numpy(std::vector<int32_t>(c.hist_q));
        d["hist_count"] = to_numpy(std::vector<int64_t>(c.hist_count));
        return d;
      });

  m.def(
      "choose_gap_m",
      [](I64Array n, I64Array total) {
        MDLSAE_CHECK_ARG(n.size() == total.size(), "n and total differ in length");
        std::vector<int32_t> out(size_t(n.size()));
        for (py::ssize_t i = 0; i < n.size(); ++i)
          out[i] = codec::choose_gap_m(uint64_t(n.data()[i]), uint64_t(total.data()[i]));
        return to_numpy(std::move(out));
      },
      py::arg("n"), py::arg("total"));

  m.def(
      "encode_chunks",
      [](const Model& md, I64Array row_ptr, I32Array index, I32Array q, int64_t chunk_rows, int32_t fps) {
        const codec::CodesView v = codes_view(row_ptr, index, q);
        std::vector<std::vector<uint8_t>> chunks;
        {
          py::gil_scoped_release nogil;
          chunks = codec::encode_chunks(md.tables, md.encoder(), v, chunk_rows, fps);
        }
        py::list out;
        for (const auto& c : chunks) out.append(py::bytes(reinterpret_cast<const char*>(c.data()), c.size()));
        return out;
      },
      py::arg("model"), py::arg("row_ptr"), py::arg("index"), py::arg("q"), py::arg("chunk_rows"),
      py::arg("features_per_stream") = 0);

  m.def(
      "decode_chunks",
      [](const Model& md, const std::vector<py::bytes>& payloads, const std::vector<int64_t>& rows, int32_t fps) {
        MDLSAE_CHECK_ARG(payloads.size() == rows.size(), "payloads and rows differ in length");
        std::vector<codec::ChunkRef> refs;
        for (size_t i = 0; i < payloads.size(); ++i) {
          std::string_view v = payloads[i];
          refs.push_back({reinterpret_cast<const uint8_t*>(v.data()), v.size(), rows[i]});
        }
        codec::CodesOut c;
        {
          py::gil_scoped_release nogil;
          c = codec::decode_chunks(md.tables, md.decoder(), refs, fps);
        }
        return py::make_tuple(to_numpy(std::move(c.row_ptr)), to_numpy(std::move(c.index)), to_numpy(std::move(c.q)));
      },
      py::arg("model"), py::arg("payloads"), py::arg("rows"), py::arg("features_per_stream") = 0);

  m.def(
      "check_stream",
      [](int32_t error, int32_t feature, int32_t value) { codec::check_stream({error, feature, value}); },
      py::arg("error"), py::arg("feature"), py::arg("value"),
      "Raises ValueError naming why a stream failed to encode (a StreamStatus of the device coder)");
  // The host build of the device coder's driver: the GPU's steps, run here (mdlsae.codec.streams).
  py::module_ flat = m.def_submodule("flat", "host build of the device rANS coder's driver");
  bind::def_flat_coder<HostFlatCoder>(flat);

  m.def(
      "select_quantize",
      [](uintptr_t ptr, int dtype, int64_t rows, int64_t d_sae, int64_t row_stride, int32_t k,
         std::optional<F32Array> threshold, float step, std::optional<F32Array> steps,
         Histogram* hist, std::optional<F32Array> bias, std::optional<I32Array> parent) {
        MDLSAE_CHECK_ARG(dtype >= 0 && dtype <= 2, "dtype code must be 0 (f32), 1 (f16) or 2 (bf16), got ", dtype);
        Selection sel{k, feature_vector(threshold, d_sae, "threshold"), feature_vector(bias, d_sae, "bias"),
                      feature_vector(parent, d_sae, "parent")};
        Steps st{step, feature_vector(steps, d_sae, "steps")};
        SparseCodes c;
        {
          py::gil_scoped_release nogil;
          c = select_quantize(reinterpret_cast<const void*>(ptr), DType(dtype), rows, d_sae,
                              row_stride, sel, st, hist);
        }
        return py::make_tuple(to_numpy(std::move(c.row_ptr)), to_numpy(std::move(c.index)),
                              to_numpy(std::move(c.q)));
      },
      py::arg("ptr"), py::arg("dtype"), py::arg("rows"), py::arg("d_sae"), py::arg("row_stride"),
      py::arg("k"), py::arg("threshold"), py::arg("step"), py::arg("steps"), py::arg("hist"),
      py::arg("bias") = py::none(), py::arg("parent") = py::none());
}

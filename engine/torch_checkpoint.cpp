// PyTorch checkpoint reading (contract in torch_checkpoint.h).
//
// The pickle machine follows CPython's Lib/pickle.py semantics for the opcodes it knows: a value stack, a mark stack
// (MARK ... TUPLE / SETITEMS / APPENDS), a memo (BINPUT / BINGET / MEMOIZE), GLOBAL / STACK_GLOBAL naming functions,
// REDUCE calling one with a tuple, BUILD setting an object's state (ignored here: an OrderedDict's _metadata, a
// parameter's extra state), BINPERSID asking the loader for a storage. torch.save's persistent id for a storage is
// the tuple ("storage", torch.<Type>Storage, key, location, numel); a tensor is _rebuild_tensor_v2(storage,
// storage_offset, size, stride, requires_grad, backward_hooks[, metadata]), in elements of the storage's type.
// Objects live in an arena owned by the machine and refer to each other by pointer, so a pickle that builds a
// cycle or a deep nest costs no recursion and leaks nothing (the one recursive call, through
// _rebuild_from_type_v2, stops at depth 4).
#include "engine/torch_checkpoint.h"

#include <cstring>
#include <deque>
#include <functional>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/file_io.h"
#include "engine/strided.h"
#include "engine/zip_reader.h"

namespace ssmtune {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmtune's checkpoint readers assume a little-endian host");

namespace {

const char* const kFix = "; fix: use an intact checkpoint written by torch.save(model.state_dict(), path), or "
                         "convert it to safetensors";

struct Obj {
    enum Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };
    Kind kind = None;
    int64_t i = 0;
    double f = 0;
    std::string s;             // Str, Bytes, Global ("module.name"), Storage (its key)
    std::vector<Obj*> items;   // Tuple, List; Dict: key, value, key, value, ...
    DType dtype = DType::F32;  // Storage
    int64_t numel = 0;         // Storage: elements
    Obj* storage = nullptr;    // Tensor
    int64_t offset = 0;        // Tensor: storage offset, in elements
    Shape shape, stride;       // Tensor
};

const char* kind_name(Obj::Kind k) {
    static const char* names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict",
                                  "global", "storage", "tensor"};
    return names[k];
}

// torch.<Type>Storage → dtype; false for the types ssmtune does not hold (complex, quantized, ...).
bool storage_dtype(const std::string& global, DType& dtype) {
    static const std::map<std::string, DType> known = {
        {"torch.FloatStorage", DType::F32}, {"torch.DoubleStorage", DType::F64}, {"torch.HalfStorage", DType::F16},
        {"torch.BFloat16Storage", DType::BF16}, {"torch.LongStorage", DType::I64}, {"torch.IntStorage", DType::I32},
        {"torch.ShortStorage", DType::I16}, {"torch.CharStorage", DType::I8}, {"torch.ByteStorage", DType::U8},
        {"torch.BoolStorage", DType::BOOL}};
    auto it = known.find(global);
    if (it == known.end()) return false;
    dtype = it->second;
    return true;
}

// As the JSON writers that will carry the name (safetensors headers, error lines) require: strict UTF-8.
bool valid_utf8(const std::string& s) {
    try {
        (void)nlohmann::json(s).dump();
        return true;
    } catch (const nlohmann::json::exception&) {
        return false;
    }
}

class Unpickler {
public:
    Unpickler(const uint8_t* data, uint64_t size, std::string source) : p_(data), size_(size), source_(std::move(source)) {}

    // Runs the pickle to its STOP and returns the object it built.
    const Obj* run() {
        for (;;) {
            const uint64_t at = pos_;
            const uint8_t op = byte();
            switch (op) {
                case 0x80: SSMTUNE_CHECK(byte() <= 5, source_, ": pickle protocol above 5", kFix); break;  // PROTO
                case 0x95: take(8); break;                                                                  // FRAME
                case '(': marks_.push_back(stack_.size()); break;                                           // MARK
                case '.': SSMTUNE_CHECK(!stack_.empty(), source_, ": STOP with nothing built", kFix); return stack_.back();
                case 'N': push(make(Obj::None)); break;
                case 0x88: case 0x89: { Obj* o = make(Obj::Bool); o->i = op == 0x88; push(o); break; }
                case 'K': push_int(byte()); break;                                         // BININT1
                case 'M': push_int(le(2)); break;                                          // BININT2
                case 'J': push_int(int64_t(int32_t(uint32_t(le(4))))); break;              // BININT
                case 0x8a: {                                                               // LONG1
                    const uint8_t n = byte();
                    SSMTUNE_CHECK(n <= 8, source_, ": an integer of ", int(n), " bytes at byte ", at, kFix);
                    uint64_t v = le(n);
                    if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1u) v |= ~uint64_t(0) << (8 * n);  // sign-extend
                    push_int(int64_t(v));
                    break;
                }
                case 'G': {                                                                // BINFLOAT, big-endian
                    uint64_t bits = 0;
                    for (int k = 0; k < 8; ++k) bits = (bits << 8) | byte();
                    Obj* o = make(Obj::Float);
                    std::memcpy(&o->f, &bits, 8);
                    push(o);
                    break;
                }
                case 'X': push_text(Obj::Str, le(4)); break;                               // BINUNICODE
                case 0x8c: push_text(Obj::Str, byte()); break;                             // SHORT_BINUNICODE
                case 0x8d: push_text(Obj::Str, le(8)); break;                              // BINUNICODE8
                case 'T': push_text(Obj::Str, le(4)); break;                               // BINSTRING
                case 'U': push_text(Obj::Str, byte()); break;                              // SHORT_BINSTRING
                case 'B': push_text(Obj::Bytes, le(4)); break;                             // BINBYTES
                case 'C': push_text(Obj::Bytes, byte()); break;                            // SHORT_BINBYTES
                case 0x8e: push_text(Obj::Bytes, le(8)); break;                            // BINBYTES8
                case ')': push(make(Obj::Tuple)); break;                                   // EMPTY_TUPLE
                case 't': push(make_tuple(pop_mark())); break;                             // TUPLE
                case 0x85: case 0x86: case 0x87: {                                         // TUPLE1..3
                    const size_t n = size_t(op - 0x84);
                    SSMTUNE_CHECK(stack_.size() >= n + floor(), source_, ": TUPLE", n, " on a short stack at byte ", at, kFix);
                    std::vector<Obj*> items(stack_.end() - long(n), stack_.end());
                    stack_.resize(stack_.size() - n);
                    push(make_tuple(items));
                    break;
                }
                case ']': push(make(Obj::List)); break;                                    // EMPTY_LIST
                case '}': push(make(Obj::Dict)); break;                                    // EMPTY_DICT
                case 'a': { Obj* v = pop(); top(Obj::List, "APPEND")->items.push_back(v); break; }
                case 'e': { auto v = pop_mark(); auto& l = top(Obj::List, "APPENDS")->items; l.insert(l.end(), v.begin(), v.end()); break; }
                case 's': { Obj* v = pop(); Obj* k = pop(); auto& d = top(Obj::Dict, "SETITEM")->items; d.push_back(k); d.push_back(v); break; }
                case 'u': {                                                                // SETITEMS
                    auto v = pop_mark();
                    SSMTUNE_CHECK(v.size() % 2 == 0, source_, ": SETITEMS with an odd number of items at byte ", at, kFix);
                    auto& d = top(Obj::Dict, "SETITEMS")->items;
                    d.insert(d.end(), v.begin(), v.end());
                    break;
                }
                case 'q': memo_[byte()] = top(); break;                                    // BINPUT
                case 'r': memo_[le(4)] = top(); break;                                     // LONG_BINPUT
                case 0x94: memo_[memo_.size()] = top(); break;                             // MEMOIZE
                case 'h': push(recall(byte(), at)); break;                                 // BINGET
                case 'j': push(recall(le(4), at)); break;                                  // LONG_BINGET
                case 'c': {                                                                // GLOBAL
                    const std::string module = line(), name = line();
                    Obj* g = make(Obj::Global);
                    g->s = module + "." + name;
                    push(g);
                    break;
                }
                case 0x93: {                                                               // STACK_GLOBAL
                    Obj* name = pop();
                    Obj* module = pop();
                    SSMTUNE_CHECK(name->kind == Obj::Str && module->kind == Obj::Str, source_,
                                  ": STACK_GLOBAL without two strings at byte ", at, kFix);
                    Obj* g = make(Obj::Global);
                    g->s = module->s + "." + name->s;
                    push(g);
                    break;
                }
                case 'Q': push(persistent_load(pop(), at)); break;                         // BINPERSID
                case 'R': {                                                                // REDUCE
                    Obj* args = pop();
                    Obj* callable = pop();
                    push(call(callable, args, at, 0));
                    break;
                }
                case 'b': pop(); top(); break;                                             // BUILD: state ignored
                default:
                    SSMTUNE_FAIL(source_, ": pickle opcode 0x", hex(op), " at byte ", at, " is not one a state_dict "
                                 "uses (ssmtune reads pickle protocols 2-5 as torch.save writes them)", kFix);
            }
        }
    }

    // Storage keys in the order the pickle first named them.
    const std::vector<Obj*>& storages() const { return storage_order_; }

private:
    const uint8_t* p_;
    uint64_t size_, pos_ = 0;
    std::string source_;
    std::deque<Obj> arena_;
    std::vector<Obj*> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint64_t, Obj*> memo_;
    std::map<std::string, Obj*> storage_by_key_;
    std::vector<Obj*> storage_order_;

    static std::string hex(unsigned v) {
        const char* d = "0123456789abcdef";
        return std::string{d[(v >> 4) & 15], d[v & 15]};
    }
    Obj* make(Obj::Kind k) {
        arena_.emplace_back();
        arena_.back().kind = k;
        return &arena_.back();
    }
    Obj* make_tuple(std::vector<Obj*> items) {
        Obj* t = make(Obj::Tuple);
        t->items = std::move(items);
        return t;
    }
    uint8_t byte() {
        SSMTUNE_CHECK(pos_ < size_, source_, ": data.pkl ends before its STOP opcode (truncated)", kFix);
        return p_[pos_++];
    }
    const uint8_t* take(uint64_t n) {
        SSMTUNE_CHECK(n <= size_ - pos_, source_, ": data.pkl ends inside a ", n, "-byte field at byte ", pos_, kFix);
        const uint8_t* at = p_ + pos_;
        pos_ += n;
        return at;
    }
    uint64_t le(int n) {
        const uint8_t* b = take(uint64_t(n));
        uint64_t v = 0;
        for (int k = n - 1; k >= 0; --k) v = (v << 8) | b[k];
        return v;
    }
    std::string line() {
        const uint64_t start = pos_;
        while (byte() != '\n') {}
        return std::string(reinterpret_cast<const char*>(p_ + start), size_t(pos_ - 1 - start));
    }
    void push(Obj* o) { stack_.push_back(o); }
    void push_int(int64_t v) { Obj* o = make(Obj::Int); o->i = v; push(o); }
    void push_text(Obj::Kind k, uint64_t n) {
        const uint8_t* b = take(n);
        Obj* o = make(k);
        o->s.assign(reinterpret_cast<const char*>(b), size_t(n));
        push(o);
    }
    // The lowest stack slot the current mark leaves to the opcodes after it.
    size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
    Obj* pop() {
        SSMTUNE_CHECK(stack_.size() > floor(), source_, ": pickle pops an empty stack at byte ", pos_ - 1, kFix);
        Obj* o = stack_.back();
        stack_.pop_back();
        return o;
    }
    Obj* top() {
        SSMTUNE_CHECK(stack_.size() > floor(), source_, ": pickle reads an empty stack at byte ", pos_ - 1, kFix);
        return stack_.back();
    }
    Obj* top(Obj::Kind k, const char* op) {
        Obj* o = top();
        SSMTUNE_CHECK(o->kind == k, source_, ": ", op, " on a ", kind_name(o->kind), " at byte ", pos_ - 1, kFix);
        return o;
    }
    std::vector<Obj*> pop_mark() {
        SSMTUNE_CHECK(!marks_.empty(), source_, ": pickle closes a MARK it never opened at byte ", pos_ - 1, kFix);
        const size_t k = marks_.back();
        marks_.pop_back();
        std::vector<Obj*> items(stack_.begin() + long(k), stack_.end());
        stack_.resize(k);
        return items;
    }
    Obj* recall(uint64_t index, uint64_t at) {
        auto it = memo_.find(index);
        SSMTUNE_CHECK(it != memo_.end(), source_, ": pickle recalls memo ", index, ", never stored, at byte ", at, kFix);
        return it->second;
    }
    int64_t get_int(const Obj* o, const char* what, uint64_t at) {
        SSMTUNE_CHECK(o->kind == Obj::Int, source_, ": ", what, " is a ", kind_name(o->kind), ", not an int, at byte ",
                      at, kFix);
        return o->i;
    }
    Shape get_ints(const Obj* o, const char* what, uint64_t at) {
        SSMTUNE_CHECK(o->kind == Obj::Tuple || o->kind == Obj::List, source_, ": a tensor's ", what, " is a ",
                      kind_name(o->kind), ", not a tuple, at byte ", at, kFix);
        Shape out;
        for (const Obj* v : o->items) out.push_back(get_int(v, what, at));
        return out;
    }

    // ("storage", torch.<Type>Storage, key, location, numel) → the storage (one object per key).
    Obj* persistent_load(const Obj* pid, uint64_t at) {
        SSMTUNE_CHECK(pid->kind == Obj::Tuple && pid->items.size() == 5 && pid->items[0]->kind == Obj::Str &&
                          pid->items[0]->s == "storage" && pid->items[1]->kind == Obj::Global &&
                          pid->items[2]->kind == Obj::Str,
                      source_, ": a persistent id at byte ", at, " is not torch.save's (\"storage\", type, key, "
                      "location, numel)", kFix);
        DType dtype;
        SSMTUNE_CHECK(storage_dtype(pid->items[1]->s, dtype), source_, ": storage type ", pid->items[1]->s,
                      " is not one ssmtune holds (float, double, half, bfloat16, long, int, short, char, byte, bool); "
                      "fix: convert the tensors to one of those before saving");
        const int64_t numel = get_int(pid->items[4], "a storage's size", at);
        SSMTUNE_CHECK(numel >= 0 && uint64_t(numel) <= (uint64_t(1) << 62) / dtype_size(dtype), source_,
                      ": storage ", pid->items[2]->s, " claims ", numel, " elements", kFix);
        Obj*& s = storage_by_key_[pid->items[2]->s];
        if (s) {
            SSMTUNE_CHECK(s->dtype == dtype && s->numel == numel, source_, ": storage ", s->s,
                          " is named twice with different types or sizes", kFix);
            return s;
        }
        s = make(Obj::Storage);
        s->s = pid->items[2]->s;
        s->dtype = dtype;
        s->numel = numel;
        storage_order_.push_back(s);
        return s;
    }

    // What REDUCE does: the functions a saved tensor needs, and nothing else.
    Obj* call(const Obj* callable, const Obj* args, uint64_t at, int depth) {
        SSMTUNE_CHECK(callable->kind == Obj::Global, source_, ": REDUCE calls a ", kind_name(callable->kind),
                      " at byte ", at, kFix);
        SSMTUNE_CHECK(args->kind == Obj::Tuple, source_, ": REDUCE's arguments are a ", kind_name(args->kind),
                      ", not a tuple, at byte ", at, kFix);
        const std::string& f = callable->s;
        const auto& a = args->items;
        if (f == "collections.OrderedDict") {
            SSMTUNE_CHECK(a.empty(), source_, ": OrderedDict built from arguments at byte ", at, kFix);
            return make(Obj::Dict);
        }
        if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
            const size_t need = f == "torch._utils._rebuild_tensor" ? 4 : 6;
            SSMTUNE_CHECK(a.size() == need || (need == 6 && a.size() == 7), source_, ": ", f, " with ", a.size(),
                          " arguments at byte ", at, kFix);
            SSMTUNE_CHECK(a[0]->kind == Obj::Storage, source_, ": ", f, " without a storage at byte ", at, kFix);
            Obj* t = make(Obj::Tensor);
            t->storage = a[0];
            t->offset = get_int(a[1], "storage offset", at);
            t->shape = get_ints(a[2], "size", at);
            t->stride = get_ints(a[3], "stride", at);
            check_view(*t, at);
            return t;
        }
        if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
            SSMTUNE_CHECK(!a.empty() && a[0]->kind == Obj::Tensor, source_, ": ", f, " without a tensor at byte ", at,
                          kFix);
            return a[0];
        }
        if (f == "torch._tensor._rebuild_from_type_v2") {  // (func, type, args, state): a tensor subclass
            SSMTUNE_CHECK(a.size() == 4 && depth < 4, source_, ": ", f, " malformed at byte ", at, kFix);
            return call(a[0], a[2], at, depth + 1);
        }
        SSMTUNE_FAIL(source_, ": the pickle calls ", f, " at byte ", at, ", which a state_dict of tensors does not "
                     "need; ssmtune runs no function a checkpoint names beyond the tensor rebuilders (a pickle can "
                     "name any Python function), so it refuses this file", kFix);
    }

    // The view must lie inside its storage: offset + Σ (size_i − 1) · stride_i < numel (sizes, strides ≥ 0).
    void check_view(const Obj& t, uint64_t at) {
        SSMTUNE_CHECK(t.shape.size() == t.stride.size() && t.shape.size() <= 16, source_, ": a tensor with ",
                      t.shape.size(), " sizes and ", t.stride.size(), " strides at byte ", at, kFix);
        const uint64_t limit = uint64_t(t.storage->numel);
        SSMTUNE_CHECK(t.offset >= 0 && uint64_t(t.offset) <= limit, source_, ": a tensor starts at element ", t.offset,
                      " of storage ", t.storage->s, " (", limit, " elements)", kFix);
        uint64_t numel = 1, last = uint64_t(t.offset);
        bool empty = false;
        for (size_t d = 0; d < t.shape.size(); ++d) {
            SSMTUNE_CHECK(t.shape[d] >= 0 && t.stride[d] >= 0, source_, ": a tensor with size ", t.shape[d],
                          " and stride ", t.stride[d], " at byte ", at, kFix);
            empty = empty || t.shape[d] == 0;
            SSMTUNE_CHECK(t.shape[d] == 0 || numel <= (uint64_t(1) << 62) / uint64_t(t.shape[d]), source_,
                          ": a tensor of more than 2^62 elements at byte ", at, kFix);
            numel *= uint64_t(t.shape[d]);
        }
        if (empty) return;
        for (size_t d = 0; d < t.shape.size(); ++d) {
            const uint64_t span = uint64_t(t.shape[d] - 1);
            SSMTUNE_CHECK(t.stride[d] == 0 || span <= (limit - last) / uint64_t(t.stride[d]), source_,
                          ": a tensor of shape ", shape_str(t.shape), " (stride ", shape_str(t.stride), ", offset ",
                          t.offset, ") reaches past the end of storage ", t.storage->s, " (", limit, " elements)", kFix);
            last += span * uint64_t(t.stride[d]);
        }
        SSMTUNE_CHECK(last < limit, source_, ": a tensor of shape ", shape_str(t.shape), " (offset ", t.offset,
                      ") reaches past the end of storage ", t.storage->s, " (", limit, " elements)", kFix);
    }
};

// The checkpoint's folder inside the archive ("archive/", "pytorch_model/", ...): where data.pkl is.
std::string checkpoint_prefix(const ZipArchive& zip) {
    std::string prefix;
    int found = 0;
    for (const ZipEntry& e : zip.entries()) {
        const size_t slash = e.name.find('/');
        if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
            prefix = e.name.substr(0, slash + 1);
            ++found;
        }
    }
    SSMTUNE_CHECK(found == 1, zip.source(), ": a zip archive with ", found, " checkpoint folders (FOLDER/data.pkl); "
                  "a torch.save checkpoint has one", found == 0 ? "; a TorchScript archive or another zip?" : "", kFix);
    if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
        const ZipBytes b = zip.read(*order);
        SSMTUNE_CHECK(std::string(reinterpret_cast<const char*>(b.data), size_t(b.size)) == "little", zip.source(),
                      ": its tensors are stored big-endian; fix: save it on a little-endian machine, or convert it to "
                      "safetensors");
    }
    return prefix;
}

// The flat name → tensor dict the pickle built (keys in pickle order; a repeated key keeps its last value).
std::vector<std::pair<std::string, const Obj*>> state_dict_entries(const Obj* root, const std::string& source) {
    SSMTUNE_CHECK(root->kind == Obj::Dict, source, ": the checkpoint holds a ", kind_name(root->kind),
                  ", not a dict of tensors; fix: torch.save(model.state_dict(), path)");
    std::vector<std::pair<std::string, const Obj*>> out;
    std::map<std::string, size_t> index;
    std::string nested;
    for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
        const Obj* key = root->items[k];
        const Obj* value = root->items[k + 1];
        SSMTUNE_CHECK(key->kind == Obj::Str && valid_utf8(key->s), source, ": a key of the checkpoint's dict is ",
                      key->kind == Obj::Str ? "not valid UTF-8" : std::string("not a string (") + kind_name(key->kind) + ")",
                      kFix);
        if (value->kind != Obj::Tensor) {
            nested += (nested.empty() ? "" : ", ") + key->s + " (" + kind_name(value->kind) + ")";
            continue;
        }
        auto [it, fresh] = index.emplace(key->s, out.size());
        if (fresh) out.emplace_back(key->s, value);
        else out[it->second].second = value;
    }
    SSMTUNE_CHECK(nested.empty(), source, ": the checkpoint's dict holds entries that are not tensors: ",
                  nested.size() > 300 ? nested.substr(0, 300) + "..." : nested,
                  "; fix: save the state_dict itself (for a training checkpoint, torch.save(ckpt[\"model\"], path))");
    return out;
}

// The tensor `t` copied out of its storage's bytes into `dst`, contiguous memory for all its elements.
void materialise_into(const Obj& t, const uint8_t* storage_bytes, void* dst_memory) {
    const int64_t numel = shape_numel(t.shape);
    if (numel == 0) return;
    const size_t esz = dtype_size(t.storage->dtype);
    auto* dst = static_cast<uint8_t*>(dst_memory);
    if (t.stride == contiguous_strides(t.shape)) {
        std::memcpy(dst, storage_bytes + uint64_t(t.offset) * esz, size_t(numel) * esz);
        return;
    }
    for_each_offset(t.shape, t.stride, t.offset, [&](int64_t i, int64_t from) {
        std::memcpy(dst + size_t(i) * esz, storage_bytes + uint64_t(from) * esz, esz);
    });
}

// Refuses the pre-1.6 format (a bare pickle: protocol opcode, then the magic number) with its fix.
void check_zip(const uint8_t* data, uint64_t size, const std::string& source) {
    if (looks_like_zip(data, size)) return;
    SSMTUNE_CHECK(!(size >= 2 && data[0] == 0x80), source, ": a checkpoint in PyTorch's legacy format (before 1.6); "
                  "fix: load and re-save it with a current torch (torch.save(torch.load(p), p)), or convert it to "
                  "safetensors");
    SSMTUNE_FAIL(source, ": not a PyTorch checkpoint (no zip archive: ", size == 0 ? "the file is empty" :
                 "it does not start with PK\\3\\4", ")", kFix);
}

struct Parsed {
    std::unique_ptr<ZipArchive> zip;
    std::string prefix;
    ZipBytes pickle;
    std::unique_ptr<Unpickler> machine;
    std::vector<std::pair<std::string, const Obj*>> entries;
};

Parsed parse(const uint8_t* data, uint64_t size, const std::string& source) {
    check_zip(data, size, source);
    Parsed p;
    p.zip = std::make_unique<ZipArchive>(data, size, source);
    p.prefix = checkpoint_prefix(*p.zip);
    p.pickle = p.zip->read(*p.zip->find(p.prefix + "data.pkl"));
    p.machine = std::make_unique<Unpickler>(p.pickle.data, p.pickle.size, source + " (" + p.prefix + "data.pkl)");
    p.entries = state_dict_entries(p.machine->run(), source);
    return p;
}

// Reads a storage's archive entry: its uncompressed bytes, CRC-checked.
using StorageLoader = std::function<ZipBytes(const ZipEntry&, const ZipArchive&)>;

// The checkpoint opened: data.pkl run, every storage it names found in the archive with the size the pickle gives,
// expanded views capped. The archive's bytes are read here and, without a `load`, again when storages are read; with
// one, storages come from it and the bytes given here are not touched after construction. A storage's bytes are read
// when the first tensor on it is and kept only until the last tensor on it has been (tied weights share one storage;
// so may a hostile file's thousand views, which must not cost a thousand inflations).
class Contents {
public:
    Contents(const uint8_t* data, uint64_t size, const std::string& source, StorageLoader load = {})
        : p_(parse(data, size, source)), load_(std::move(load)) {
        if (!load_) load_ = [](const ZipEntry& e, const ZipArchive& zip) { return zip.read(e); };
        for (const Obj* s : p_.machine->storages()) {
            const ZipEntry* e = p_.zip->find(p_.prefix + "data/" + s->s);
            SSMTUNE_CHECK(e, source, ": storage ", s->s, " is missing (no entry ", p_.prefix, "data/", s->s, ")", kFix);
            SSMTUNE_CHECK(e->size == uint64_t(s->numel) * dtype_size(s->dtype), source, ": storage ", s->s, " holds ",
                          e->size, " bytes but the pickle describes ", s->numel, " elements of ", dtype_name(s->dtype),
                          kFix);
            storage_entry_[s->s] = e;
        }
        // A view holds at most its storage's elements unless strides of 0 repeat them (an expanded tensor); copied
        // out, those could ask for far more memory than the file holds, so they are capped in all (2^26 elements).
        constexpr uint64_t kMaxExpanded = uint64_t(1) << 26;
        uint64_t expanded = 0;
        for (const auto& [name, t] : p_.entries) {
            uint64_t numel = 1;
            for (int64_t d : t->shape) numel *= uint64_t(d);  // (≤ 2^62: checked when the pickle built it)
            if (numel > uint64_t(t->storage->numel)) expanded += numel;
            SSMTUNE_CHECK(expanded <= kMaxExpanded, source, ": tensor ", name, " (", shape_str(t->shape), ") repeats "
                          "its storage's ", t->storage->numel, " elements through zero strides, and such expanded "
                          "tensors exceed 2^26 elements in all; fix: save them as tensor.clone() or leave them out");
            ++pending_[t->storage->s];
        }
    }
    const std::vector<std::pair<std::string, const Obj*>>& entries() const { return p_.entries; }
    const ZipArchive& zip() const { return *p_.zip; }
    const ZipEntry& storage_entry(const Obj& t) const { return *storage_entry_.at(t.storage->s); }
    // The tensor `t` (one of entries()) copied out into `dst` (contiguous memory for all its elements).
    void read_into(const Obj& t, void* dst) {
        const std::string& key = t.storage->s;
        auto it = bytes_.find(key);
        if (it == bytes_.end()) it = bytes_.emplace(key, load_(*storage_entry_.at(key), *p_.zip)).first;
        materialise_into(t, it->second.data, dst);
        done_with(t);
    }
    // Counts `t` read: its storage's bytes are let go once every tensor on it has been (one read again after that
    // reads them again).
    void done_with(const Obj& t) {
        const std::string& key = t.storage->s;
        if (--pending_[key] > 0) return;
        pending_[key] = 0;
        bytes_.erase(key);
    }
    Tensor read(const Obj& t) {
        Tensor out = Tensor::empty(t.shape, t.storage->dtype);
        read_into(t, out.raw_data());
        return out;
    }

private:
    Parsed p_;
    StorageLoader load_;
    std::map<std::string, const ZipEntry*> storage_entry_;
    std::map<std::string, ZipBytes> bytes_;
    std::map<std::string, int64_t> pending_;
};

// A checkpoint file read one tensor at a time. The file is mapped only while its directory and data.pkl are read;
// storages are read by pread (so a file cut short later is an Error, not SIGBUS, and no page of it stays in this
// process's memory): a tensor that is its whole stored storage, as a saved parameter is, straight into the
// destination; views and deflated storages through Contents' buffer.
class TorchCheckpointFile : public TensorFile {
public:
    explicit TorchCheckpointFile(const std::string& path)
        : TensorFile(path), fd_(-1), size_(open_for_read(path, fd_)), contents_(open_contents()) {
        for (const auto& [name, t] : contents_.entries()) {
            entries_[name] = Entry{t->storage->dtype, t->shape};
            tensors_[name] = t;
        }
    }

private:
    Contents open_contents() const {
        const FileBytes mapped(fd_.fd, size_, path_);
        return Contents(mapped.data(), mapped.size(), path_, [this](const ZipEntry& e, const ZipArchive& zip) {
            std::vector<uint8_t> stored(size_t(e.compressed_size));
            read_exact(fd_.fd, stored.data(), e.compressed_size, e.data_offset, path_);
            ZipBytes bytes = zip.decode(e, stored.data());
            if (bytes.owned.empty()) bytes.owned = std::move(stored);  // a stored entry points into it (moving keeps
            return bytes;                                               // the buffer where it is)
        });
    }
    void read_to(const std::string& name, void* memory) const override {
        const Obj& t = *tensors_.at(name);
        const ZipEntry& e = contents_.storage_entry(t);
        if (e.method != 0 || t.offset != 0 || shape_numel(t.shape) != t.storage->numel ||
            t.stride != contiguous_strides(t.shape)) {
            contents_.read_into(t, memory);
            return;
        }
        if (e.size > 0) read_exact(fd_.fd, memory, e.size, e.data_offset, path_);
        contents_.zip().check_crc(e, static_cast<const uint8_t*>(memory));
        contents_.done_with(t);
    }
    Fd fd_;
    uint64_t size_;
    mutable Contents contents_;
    std::map<std::string, const Obj*> tensors_;
};

}  // namespace

TensorMap parse_torch_checkpoint(const uint8_t* data, uint64_t size, const std::string& source) {
    Contents contents(data, size, source);
    TensorMap out;
    for (const auto& [name, t] : contents.entries()) out[name] = contents.read(*t);
    return out;
}

TensorMap load_torch_checkpoint(const std::string& path) {
    const FileBytes file(path);
    return parse_torch_checkpoint(file.data(), file.size(), path);
}

std::unique_ptr<TensorFile> open_torch_checkpoint(const std::string& path) {
    return std::make_unique<TorchCheckpointFile>(path);
}

}  // namespace ssmtune

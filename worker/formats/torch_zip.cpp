#include "worker/formats/torch_zip.h"

// Note [restricted unpickler]: we parse data.pkl ourselves and accept only what a state_dict
// needs: dicts (incl. collections.OrderedDict, whose BUILD state such as `_metadata` is ignored),
// lists, tuples, strings, numbers, and tensors rebuilt by torch._utils._rebuild_tensor_v2 /
// _rebuild_parameter from persistent storage ids. Any other global is an error, so a file can
// never run code. Reading past the end, bad memo indexes or a short storage record are DataLoss
// errors naming the file and record.
#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <memory>

#include "common/atomic_file.h"

namespace effnet::formats {
namespace {

struct PyValue;
using PyPtr = std::shared_ptr<PyValue>;

struct PyValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;  // bool, int
  double f = 0.0;
  std::string s;             // string; global "module.name"
  std::vector<PyPtr> items;  // tuple, list
  std::vector<std::pair<PyPtr, PyPtr>> dict;
  at::Tensor tensor;
};

PyPtr Make(PyValue::Kind k) {
  auto v = std::make_shared<PyValue>();
  v->kind = k;
  return v;
}

const char* KindName(PyValue::Kind k) {
  switch (k) {
    case PyValue::Kind::kNone:
      return "None";
    case PyValue::Kind::kBool:
      return "bool";
    case PyValue::Kind::kInt:
      return "int";
    case PyValue::Kind::kFloat:
      return "float";
    case PyValue::Kind::kString:
      return "str";
    case PyValue::Kind::kTuple:
      return "tuple";
    case PyValue::Kind::kList:
      return "list";
    case PyValue::Kind::kDict:
      return "dict";
    case PyValue::Kind::kGlobal:
      return "global";
    case PyValue::Kind::kTensor:
      return "tensor";
  }
  return "?";
}

// Storage class name (torch.FloatStorage...) -> dtype.
bool StorageDtype(const std::string& global, at::ScalarType* out) {
  static const std::map<std::string, at::ScalarType> m = {
      {"torch.FloatStorage", at::kFloat}, {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},   {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.LongStorage", at::kLong},   {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort}, {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},   {"torch.BoolStorage", at::kBool},
  };
  auto it = m.find(global);
  if (it == m.end()) return false;
  *out = it->second;
  return true;
}

class Unpickler {
 public:
  Unpickler(const char* data, size_t size, caffe2::serialize::PyTorchStreamReader& zip)
      : p_(data), end_(data + size), zip_(zip) {}

  Result<PyPtr> Run() {
    while (true) {
      if (p_ >= end_) return DataLoss("data.pkl: ended without STOP");
      const auto op = static_cast<uint8_t>(*p_++);
      Status st = Step(op);
      if (!st.ok()) return st;
      if (stopped_) break;
    }
    if (stack_.size() != 1)
      return DataLoss("data.pkl: stack holds " + std::to_string(stack_.size()) + " values at STOP");
    return stack_.back();
  }

 private:
  Status Need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return DataLoss("data.pkl: truncated");
    return Status::Ok();
  }
  template <typename T>
  Status ReadLe(T* out) {
    EFFNET_RETURN_IF_ERROR(Need(sizeof(T)));
    std::memcpy(out, p_, sizeof(T));  // little-endian host (x86-64, aarch64)
    p_ += sizeof(T);
    return Status::Ok();
  }
  Status ReadLine(std::string* out) {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl) return DataLoss("data.pkl: truncated GLOBAL");
    out->assign(p_, nl);
    p_ = nl + 1;
    return Status::Ok();
  }
  Status ReadString(size_t n) {
    EFFNET_RETURN_IF_ERROR(Need(n));
    auto v = Make(PyValue::Kind::kString);
    v->s.assign(p_, n);
    p_ += n;
    stack_.push_back(v);
    return Status::Ok();
  }
  Result<PyPtr> Pop() {
    if (stack_.size() <= MarkBase()) return Status(DataLoss("data.pkl: stack underflow"));
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  size_t MarkBase() const { return marks_.empty() ? 0 : marks_.back(); }
  Result<std::vector<PyPtr>> PopToMark() {
    if (marks_.empty()) return Status(DataLoss("data.pkl: no MARK"));
    const size_t base = marks_.back();
    marks_.pop_back();
    if (base > stack_.size()) return Status(DataLoss("data.pkl: bad MARK"));
    std::vector<PyPtr> items(stack_.begin() + base, stack_.end());
    stack_.resize(base);
    return items;
  }
  Status Memo(uint32_t idx) {
    if (stack_.empty()) return DataLoss("data.pkl: PUT on an empty stack");
    if (idx > 10'000'000) return DataLoss("data.pkl: memo index out of range");
    memo_[idx] = stack_.back();
    return Status::Ok();
  }
  Status Get(uint32_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) return DataLoss("data.pkl: GET of unknown memo " + std::to_string(idx));
    stack_.push_back(it->second);
    return Status::Ok();
  }
  Status Top(PyValue::Kind kind, PyPtr* out) {
    if (stack_.size() <= MarkBase()) return DataLoss("data.pkl: stack underflow");
    if (stack_.back()->kind != kind) {
      return DataLoss(std::string("data.pkl: expected a ") + KindName(kind) +
                      " on the stack, got " + KindName(stack_.back()->kind));
    }
    *out = stack_.back();
    return Status::Ok();
  }

  Status Step(uint8_t op);
  Result<PyPtr> PersistentLoad(const PyPtr& pid);
  Result<PyPtr> Call(const PyPtr& callable, const PyPtr& args);

  const char* p_;
  const char* end_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, PyPtr> memo_;
  std::map<std::string, at::Tensor> storages_;
  bool stopped_ = false;
};

Status Unpickler::Step(uint8_t op) {
  using K = PyValue::Kind;
  switch (op) {
    case 0x80: {  // PROTO
      uint8_t v;
      return ReadLe(&v);
    }
    case 0x95: {  // FRAME
      uint64_t n;
      return ReadLe(&n);
    }
    case '.':
      stopped_ = true;
      return Status::Ok();
    case 'c': {  // GLOBAL
      std::string mod, name;
      EFFNET_RETURN_IF_ERROR(ReadLine(&mod));
      EFFNET_RETURN_IF_ERROR(ReadLine(&name));
      auto g = Make(K::kGlobal);
      g->s = mod + "." + name;
      stack_.push_back(g);
      return Status::Ok();
    }
    case 0x93: {  // STACK_GLOBAL
      EFFNET_ASSIGN_OR_RETURN(PyPtr name, Pop());
      EFFNET_ASSIGN_OR_RETURN(PyPtr mod, Pop());
      auto g = Make(K::kGlobal);
      g->s = mod->s + "." + name->s;
      stack_.push_back(g);
      return Status::Ok();
    }
    case 'q': {
      uint8_t i;
      EFFNET_RETURN_IF_ERROR(ReadLe(&i));
      return Memo(i);
    }
    case 'r': {
      uint32_t i;
      EFFNET_RETURN_IF_ERROR(ReadLe(&i));
      return Memo(i);
    }
    case 0x94:  // MEMOIZE
      return Memo(static_cast<uint32_t>(memo_.size()));
    case 'h': {
      uint8_t i;
      EFFNET_RETURN_IF_ERROR(ReadLe(&i));
      return Get(i);
    }
    case 'j': {
      uint32_t i;
      EFFNET_RETURN_IF_ERROR(ReadLe(&i));
      return Get(i);
    }
    case '(':
      marks_.push_back(stack_.size());
      return Status::Ok();
    case '0': {  // POP
      EFFNET_ASSIGN_OR_RETURN(PyPtr v, Pop());
      (void)v;
      return Status::Ok();
    }
    case '1': {  // POP_MARK
      EFFNET_ASSIGN_OR_RETURN(auto v, PopToMark());
      (void)v;
      return Status::Ok();
    }
    case '2':  // DUP
      if (stack_.empty()) return DataLoss("data.pkl: DUP on an empty stack");
      stack_.push_back(stack_.back());
      return Status::Ok();
    case ')':
      stack_.push_back(Make(K::kTuple));
      return Status::Ok();
    case 't': {
      EFFNET_ASSIGN_OR_RETURN(auto items, PopToMark());
      auto t = Make(K::kTuple);
      t->items = std::move(items);
      stack_.push_back(t);
      return Status::Ok();
    }
    case 0x85:
    case 0x86:
    case 0x87: {
      const int n = op - 0x84;
      auto t = Make(K::kTuple);
      t->items.resize(n);
      for (int k = n - 1; k >= 0; --k) {
        EFFNET_ASSIGN_OR_RETURN(t->items[k], Pop());
      }
      stack_.push_back(t);
      return Status::Ok();
    }
    case ']':
      stack_.push_back(Make(K::kList));
      return Status::Ok();
    case 'l': {
      EFFNET_ASSIGN_OR_RETURN(auto items, PopToMark());
      auto l = Make(K::kList);
      l->items = std::move(items);
      stack_.push_back(l);
      return Status::Ok();
    }
    case 'a': {
      EFFNET_ASSIGN_OR_RETURN(PyPtr v, Pop());
      PyPtr l;
      EFFNET_RETURN_IF_ERROR(Top(K::kList, &l));
      l->items.push_back(v);
      return Status::Ok();
    }
    case 'e': {
      EFFNET_ASSIGN_OR_RETURN(auto items, PopToMark());
      PyPtr l;
      EFFNET_RETURN_IF_ERROR(Top(K::kList, &l));
      l->items.insert(l->items.end(), items.begin(), items.end());
      return Status::Ok();
    }
    case '}':
      stack_.push_back(Make(K::kDict));
      return Status::Ok();
    case 'd': {
      EFFNET_ASSIGN_OR_RETURN(auto items, PopToMark());
      if (items.size() % 2) return DataLoss("data.pkl: DICT with an odd item count");
      auto d = Make(K::kDict);
      for (size_t k = 0; k < items.size(); k += 2) d->dict.emplace_back(items[k], items[k + 1]);
      stack_.push_back(d);
      return Status::Ok();
    }
    case 's': {
      EFFNET_ASSIGN_OR_RETURN(PyPtr v, Pop());
      EFFNET_ASSIGN_OR_RETURN(PyPtr k, Pop());
      PyPtr d;
      EFFNET_RETURN_IF_ERROR(Top(K::kDict, &d));
      d->dict.emplace_back(k, v);
      return Status::Ok();
    }
    case 'u': {
      EFFNET_ASSIGN_OR_RETURN(auto items, PopToMark());
      if (items.size() % 2) return DataLoss("data.pkl: SETITEMS with an odd item count");
      PyPtr d;
      EFFNET_RETURN_IF_ERROR(Top(K::kDict, &d));
      for (size_t k = 0; k < items.size(); k += 2) d->dict.emplace_back(items[k], items[k + 1]);
      return Status::Ok();
    }
    case 'X': {
      uint32_t n;
      EFFNET_RETURN_IF_ERROR(ReadLe(&n));
      return ReadString(n);
    }
    case 0x8c:
    case 'U':
    case 'C': {
      uint8_t n;
      EFFNET_RETURN_IF_ERROR(ReadLe(&n));
      return ReadString(n);
    }
    case 0x8d:
    case 0x8e: {
      uint64_t n;
      EFFNET_RETURN_IF_ERROR(ReadLe(&n));
      return ReadString(n);
    }
    case 'T':
    case 'B': {
      uint32_t n;
      EFFNET_RETURN_IF_ERROR(ReadLe(&n));
      return ReadString(n);
    }
    case 'J': {
      int32_t v;
      EFFNET_RETURN_IF_ERROR(ReadLe(&v));
      auto x = Make(K::kInt);
      x->i = v;
      stack_.push_back(x);
      return Status::Ok();
    }
    case 'K': {
      uint8_t v;
      EFFNET_RETURN_IF_ERROR(ReadLe(&v));
      auto x = Make(K::kInt);
      x->i = v;
      stack_.push_back(x);
      return Status::Ok();
    }
    case 'M': {
      uint16_t v;
      EFFNET_RETURN_IF_ERROR(ReadLe(&v));
      auto x = Make(K::kInt);
      x->i = v;
      stack_.push_back(x);
      return Status::Ok();
    }
    case 0x8a: {  // LONG1: n-byte little-endian two's complement
      uint8_t n;
      EFFNET_RETURN_IF_ERROR(ReadLe(&n));
      if (n > 8) return DataLoss("data.pkl: integer wider than 64 bits");
      EFFNET_RETURN_IF_ERROR(Need(n));
      uint64_t u = 0;
      for (int k = 0; k < n; ++k) u |= uint64_t{static_cast<uint8_t>(p_[k])} << (8 * k);
      if (n > 0 && n < 8 && (static_cast<uint8_t>(p_[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
      p_ += n;
      auto x = Make(K::kInt);
      x->i = static_cast<int64_t>(u);
      stack_.push_back(x);
      return Status::Ok();
    }
    case 'G': {  // BINFLOAT, big-endian
      EFFNET_RETURN_IF_ERROR(Need(8));
      uint64_t u = 0;
      for (int k = 0; k < 8; ++k) u = (u << 8) | static_cast<uint8_t>(p_[k]);
      p_ += 8;
      auto x = Make(K::kFloat);
      std::memcpy(&x->f, &u, 8);
      stack_.push_back(x);
      return Status::Ok();
    }
    case 0x88:
    case 0x89: {
      auto x = Make(K::kBool);
      x->i = op == 0x88;
      stack_.push_back(x);
      return Status::Ok();
    }
    case 'N':
      stack_.push_back(Make(K::kNone));
      return Status::Ok();
    case 'Q': {  // BINPERSID
      EFFNET_ASSIGN_OR_RETURN(PyPtr pid, Pop());
      EFFNET_ASSIGN_OR_RETURN(PyPtr v, PersistentLoad(pid));
      stack_.push_back(v);
      return Status::Ok();
    }
    case 'R':
    case 0x81: {  // REDUCE, NEWOBJ
      EFFNET_ASSIGN_OR_RETURN(PyPtr args, Pop());
      EFFNET_ASSIGN_OR_RETURN(PyPtr fn, Pop());
      EFFNET_ASSIGN_OR_RETURN(PyPtr v, Call(fn, args));
      stack_.push_back(v);
      return Status::Ok();
    }
    case 'b': {  // BUILD: state of an OrderedDict (`_metadata`) or a tensor (hooks): ignored
      EFFNET_ASSIGN_OR_RETURN(PyPtr state, Pop());
      (void)state;
      if (stack_.empty()) return DataLoss("data.pkl: BUILD on an empty stack");
      const K k = stack_.back()->kind;
      if (k != K::kDict && k != K::kTensor) {
        return DataLoss(std::string("data.pkl: BUILD on a ") + KindName(k));
      }
      return Status::Ok();
    }
    default: {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "0x%02x", op);
      return InvalidArgument(std::string("data.pkl: unsupported pickle opcode ") + buf);
    }
  }
}

Result<PyPtr> Unpickler::PersistentLoad(const PyPtr& pid) {
  // ('storage', torch.<Type>Storage, key, location, numel)
  if (pid->kind != PyValue::Kind::kTuple || pid->items.size() < 5 ||
      pid->items[0]->s != "storage" || pid->items[1]->kind != PyValue::Kind::kGlobal ||
      pid->items[2]->kind != PyValue::Kind::kString || pid->items[4]->kind != PyValue::Kind::kInt) {
    return Status(InvalidArgument("data.pkl: unsupported persistent id (not a storage)"));
  }
  at::ScalarType dtype;
  if (!StorageDtype(pid->items[1]->s, &dtype)) {
    return Status(InvalidArgument("data.pkl: unsupported storage type " + pid->items[1]->s));
  }
  const std::string& key = pid->items[2]->s;
  const int64_t numel = pid->items[4]->i;
  auto out = Make(PyValue::Kind::kTensor);
  auto it = storages_.find(key);
  if (it != storages_.end()) {
    out->tensor = it->second;
    return out;
  }
  const std::string record = "data/" + key;
  if (!zip_.hasRecord(record)) return Status(DataLoss("missing record " + record));
  auto [ptr, size] = zip_.getRecord(record);
  const size_t want = static_cast<size_t>(numel) * at::elementSize(dtype);
  if (numel < 0 || size != want) {
    return Status(DataLoss("record " + record + ": " + std::to_string(size) + " bytes, expected " +
                           std::to_string(want) + " for " + std::to_string(numel) + " elements"));
  }
  at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dtype));
  if (size > 0) std::memcpy(t.data_ptr(), ptr.get(), size);
  storages_[key] = t;
  out->tensor = t;
  return out;
}

Result<PyPtr> Unpickler::Call(const PyPtr& fn, const PyPtr& args) {
  using K = PyValue::Kind;
  if (fn->kind != K::kGlobal) return Status(DataLoss("data.pkl: REDUCE of a non-global"));
  if (args->kind != K::kTuple) return Status(DataLoss("data.pkl: REDUCE args are not a tuple"));
  const auto& a = args->items;
  if (fn->s == "collections.OrderedDict" || fn->s == "builtins.dict") {
    if (!a.empty()) return Status(InvalidArgument("data.pkl: OrderedDict with arguments"));
    return Make(K::kDict);
  }
  if (fn->s == "torch._utils._rebuild_tensor_v2" || fn->s == "torch._utils._rebuild_tensor") {
    if (a.size() < 4 || a[0]->kind != K::kTensor || a[1]->kind != K::kInt ||
        a[2]->kind != K::kTuple || a[3]->kind != K::kTuple) {
      return Status(DataLoss("data.pkl: malformed " + fn->s + " arguments"));
    }
    std::vector<int64_t> size, stride;
    for (const auto& v : a[2]->items) size.push_back(v->i);
    for (const auto& v : a[3]->items) stride.push_back(v->i);
    if (size.size() != stride.size()) return Status(DataLoss("data.pkl: size/stride rank differ"));
    const at::Tensor& storage = a[0]->tensor;
    int64_t last = a[1]->i;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0) return Status(DataLoss("data.pkl: negative size/stride"));
      if (size[d] == 0) last = -1;
      if (last >= 0) last += (size[d] - 1) * stride[d];
    }
    if (last >= storage.numel() || a[1]->i < 0) {
      return Status(DataLoss("data.pkl: tensor view exceeds its storage"));
    }
    auto out = Make(K::kTensor);
    out->tensor = storage.as_strided(size, stride, a[1]->i);
    return out;
  }
  if (fn->s == "torch.jit._pickle.restore_type_tag") {  // LibTorch pickle_save's dict tag
    if (a.empty()) return Status(DataLoss("data.pkl: malformed restore_type_tag"));
    return a[0];
  }
  if (fn->s == "torch._utils._rebuild_parameter" ||
      fn->s == "torch._utils._rebuild_parameter_with_state") {
    if (a.empty() || a[0]->kind != K::kTensor) {
      return Status(DataLoss("data.pkl: malformed " + fn->s + " arguments"));
    }
    return a[0];
  }
  return Status(InvalidArgument("data.pkl: unsupported pickle global '" + fn->s +
                                "' (only state_dicts of tensors are read)"));
}

}  // namespace

Result<StateDict> ReadTorchZip(const std::string& path) {
  auto ctx = [&](const Status& s) { return s.WithContext("reading " + path); };
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    if (zip.hasRecord("byteorder")) {
      auto [bo, n] = zip.getRecord("byteorder");
      if (std::string(static_cast<const char*>(bo.get()), n) != "little") {
        return ctx(InvalidArgument("big-endian torch files are not supported"));
      }
    }
    if (!zip.hasRecord("data.pkl")) return ctx(DataLoss("no data.pkl record"));
    auto [pkl, size] = zip.getRecord("data.pkl");
    Unpickler up(static_cast<const char*>(pkl.get()), size, zip);
    auto root = up.Run();
    if (!root.ok()) return ctx(root.status());
    const PyPtr& d = root.value();
    if (d->kind != PyValue::Kind::kDict) {
      return ctx(InvalidArgument(std::string("top-level object is a ") + KindName(d->kind) +
                                 ", expected a dict of tensors"));
    }
    StateDict out;
    for (const auto& [k, v] : d->dict) {
      if (k->kind != PyValue::Kind::kString) return ctx(InvalidArgument("non-string key"));
      if (v->kind != PyValue::Kind::kTensor) {
        return ctx(
            InvalidArgument("key '" + k->s + "' holds a " + KindName(v->kind) + ", not a tensor"));
      }
      if (out.contains(k->s)) return ctx(DataLoss("duplicate key '" + k->s + "'"));
      out.insert(k->s, v->tensor);
    }
    return out;
  } catch (const c10::Error& e) {
    return ctx(
        DataLoss(std::string("not a readable torch zip file: ") + e.what_without_backtrace()));
  }
}

namespace {

// Note [torch.save-compatible writer]: we emit the same pickle that Python's torch.save writes for
// a dict of tensors (collections.OrderedDict, torch._utils._rebuild_tensor_v2, persistent
// ('storage', torch.<T>Storage, key, 'cpu', numel) ids), so Python's torch.load with
// weights_only=True accepts it. torch::pickle_save is not used: it tags the dict with
// torch.jit._pickle.restore_type_tag, which weights_only loading rejects.
class Pickler {
 public:
  void Op(uint8_t op) { out_.push_back(static_cast<char>(op)); }
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  void Global(const std::string& mod, const std::string& name) {
    Op('c');
    out_ += mod + "\n" + name + "\n";
  }
  void Str(const std::string& v) {
    Op('X');
    const uint32_t n = static_cast<uint32_t>(v.size());
    Raw(&n, 4);
    out_ += v;
  }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Op('K');
      Op(static_cast<uint8_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Op('J');
      const int32_t x = static_cast<int32_t>(v);
      Raw(&x, 4);
    } else {
      Op(0x8a);
      Op(8);
      Raw(&v, 8);
    }
  }
  void IntTuple(at::IntArrayRef v) {
    if (v.empty()) {
      Op(')');
      return;
    }
    Op('(');
    for (int64_t x : v) Int(x);
    Op('t');
  }
  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    Op(')');
    Op('R');
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

const char* StorageName(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "FloatStorage";
    case at::kDouble:
      return "DoubleStorage";
    case at::kHalf:
      return "HalfStorage";
    case at::kBFloat16:
      return "BFloat16Storage";
    case at::kLong:
      return "LongStorage";
    case at::kInt:
      return "IntStorage";
    case at::kShort:
      return "ShortStorage";
    case at::kChar:
      return "CharStorage";
    case at::kByte:
      return "ByteStorage";
    case at::kBool:
      return "BoolStorage";
    default:
      return nullptr;
  }
}

}  // namespace

Status WriteTorchZip(const std::string& path, const StateDict& dict) {
  auto ctx = [&](const Status& s) { return s.WithContext("writing " + path); };
  std::vector<at::Tensor> storages;
  Pickler pk;
  pk.Op(0x80);
  pk.Op(2);
  pk.EmptyOrderedDict();
  pk.Op('(');
  for (const auto& item : dict) {
    // One storage per tensor, each a contiguous CPU copy (no sharing between keys).
    at::Tensor t = item.value().detach().to(at::kCPU).contiguous();
    const char* storage = StorageName(t.scalar_type());
    if (!storage) {
      return ctx(InvalidArgument("key '" + item.key() + "': unsupported dtype " +
                                 c10::toString(t.scalar_type())));
    }
    const std::string key = std::to_string(storages.size());
    storages.push_back(t);
    pk.Str(item.key());
    pk.Global("torch._utils", "_rebuild_tensor_v2");
    pk.Op('(');
    pk.Op('(');
    pk.Str("storage");
    pk.Global("torch", storage);
    pk.Str(key);
    pk.Str("cpu");
    pk.Int(t.numel());
    pk.Op('t');
    pk.Op('Q');
    pk.Int(0);
    pk.IntTuple(t.sizes());
    pk.IntTuple(t.strides());
    pk.Op(0x89);            // requires_grad False
    pk.EmptyOrderedDict();  // backward hooks
    pk.Op('t');
    pk.Op('R');
  }
  pk.Op('u');
  pk.Op('.');
  std::string out;
  try {
    caffe2::serialize::PyTorchStreamWriter zip([&out](const void* p, size_t n) {
      out.append(static_cast<const char*>(p), n);
      return n;
    });
    zip.writeRecord("data.pkl", pk.bytes().data(), pk.bytes().size());
    zip.writeRecord("byteorder", "little", 6);
    for (size_t i = 0; i < storages.size(); ++i) {
      const at::Tensor& t = storages[i];
      zip.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.numel() * t.element_size());
    }
    zip.writeEndOfFile();
  } catch (const c10::Error& e) {
    return ctx(Internal(std::string("zip writer: ") + e.what_without_backtrace()));
  }
  return ctx(WriteFileAtomic(path, out));
}

}  // namespace effnet::formats

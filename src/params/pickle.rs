//! A pickle reader that executes nothing: it interprets the opcodes `torch.save` writes (protocol 2, and the
//! protocol 4/5 opcodes a `pickle_protocol=4` save adds) into a tree of plain [`Value`]s.
//!
//! Globals are never imported or called. The ones torch checkpoints use are recognised by name ([`known`]): the
//! tensor rebuild functions, the typed storages, `collections.OrderedDict`, `argparse.Namespace`, `set` /
//! `frozenset` and `_codecs.encode` (how protocol 2 writes `bytes`). Any other global becomes
//! [`Value::Unknown`] with its name, whatever it is applied to: the caller decides whether that is a note
//! (outside the weights) or an error (inside them).
//!
//! Bounded: the nesting depth ([`MAX_DEPTH`]), the stack ([`MAX_STACK`]) and the objects made, copies from the
//! memo included ([`MAX_NODES`]); every length-prefixed argument must fit in the bytes left. A malformed pickle
//! is an error, never a panic.
use std::collections::HashMap;

/// Deepest nesting of containers (a torch checkpoint nests about 8 deep: checkpoint, optimizer states, state,
/// parameter, tensor, storage).
pub const MAX_DEPTH: u32 = 100;
/// Most values on the stack at once (`torch.save` batches dict and list items by 1,000, so its pickles need a
/// few thousand; a quarter million holds any honest tuple and keeps a stack of junk under ~20 MiB).
pub const MAX_STACK: usize = 1 << 18;
/// Most objects made while reading, memo copies included: this many per byte of pickle, plus
/// [`NODES_SLACK`], and never more than [`MAX_NODES`]. torch's pickles make at most 0.7 per byte (the Lightning
/// fixture: 17,566 objects from 33,511 bytes; a plain state dict: 1,488 from 2,202), so a copy bomb (memo
/// references that double an object at each step) stops after a few times the honest count.
pub const NODES_PER_BYTE: u64 = 8;
pub const NODES_SLACK: u64 = 4096;
pub const MAX_NODES: u64 = 8 << 20;

/// A dtype of a typed storage (`torch.FloatStorage` -> `Float`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageType {
    Float,
    Double,
    Half,
    BFloat16,
    Long,
    Int,
    Short,
    Char,
    Byte,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::Float,
            "DoubleStorage" => Self::Double,
            "HalfStorage" => Self::Half,
            "BFloat16Storage" => Self::BFloat16,
            "LongStorage" => Self::Long,
            "IntStorage" => Self::Int,
            "ShortStorage" => Self::Short,
            "CharStorage" => Self::Char,
            "ByteStorage" => Self::Byte,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Double | Self::Long => 8,
            Self::Float | Self::Int => 4,
            Self::Half | Self::BFloat16 | Self::Short => 2,
            Self::Char | Self::Byte | Self::Bool => 1,
        }
    }
}

/// A storage a tensor points into: zip entry `<archive>/data/<key>`, of `numel` elements.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageType,
    pub numel: u64,
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, not yet read.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// In elements.
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The globals torch checkpoints use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    /// `torch.Tensor`, `torch.nn.parameter.Parameter`: the `new_type` of `_rebuild_from_type_v2`.
    TensorClass,
    Storage(StorageType),
    OrderedDict,
    Namespace,
    Set,
    CodecsEncode,
}

/// The allow-list: `module.name` -> what it is. Everything else is [`Value::Unknown`].
pub fn known(module: &str, name: &str) -> Option<Known> {
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Known::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Known::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Known::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Known::RebuildFromTypeV2,
        ("torch._tensor", "Tensor") | ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => Known::TensorClass,
        ("torch", s) => Known::Storage(StorageType::from_name(s)?),
        ("collections", "OrderedDict") => Known::OrderedDict,
        ("argparse", "Namespace") => Known::Namespace,
        ("builtins" | "__builtin__", "set" | "frozenset") => Known::Set,
        ("_codecs", "encode") => Known::CodecsEncode,
        _ => return None,
    })
}

/// One object of the pickle.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (its byte length).
    BigInt(usize),
    Float(f64),
    Str(String),
    /// Bytes (their length; the content is never needed).
    Bytes(usize),
    Tuple(Seq),
    List(Seq),
    Dict(Map),
    /// `argparse.Namespace`: its attributes.
    Namespace(Map),
    /// An allowed global as a value (a class or function not applied).
    Global(Known),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// Made from a global outside the allow-list (`module.name`): never called, its arguments dropped.
    Unknown(String),
}

/// Items of a tuple, list or set, with the nesting depth and object count below them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Seq {
    pub items: Vec<Value>,
    depth: u32,
    nodes: u64,
}

/// Entries of a dict (in pickle order), with the nesting depth and object count below them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map {
    pub items: Vec<(Value, Value)>,
    depth: u32,
    nodes: u64,
}

impl Seq {
    fn new(items: Vec<Value>) -> Result<Self, String> {
        let mut s = Seq::default();
        for v in items {
            s.push(v)?;
        }
        Ok(s)
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        self.depth = self.depth.max(v.depth() + 1);
        self.nodes += v.nodes();
        self.items.push(v);
        check_depth(self.depth)
    }
}

impl Map {
    fn insert(&mut self, k: Value, v: Value) -> Result<(), String> {
        self.depth = self.depth.max(k.depth() + 1).max(v.depth() + 1);
        self.nodes += k.nodes() + v.nodes();
        self.items.push((k, v));
        check_depth(self.depth)
    }

    /// The value of string key `key` (the last one, as a Python dict keeps).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.iter().rev().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v)
    }
}

fn check_depth(d: u32) -> Result<(), String> {
    if d > MAX_DEPTH {
        return Err(format!("objects nest deeper than {MAX_DEPTH} levels; a torch checkpoint nests about 8"));
    }
    Ok(())
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(m) | Value::Namespace(m) => m.depth,
            _ => 0,
        }
    }

    fn nodes(&self) -> u64 {
        match self {
            Value::Tuple(s) | Value::List(s) => 1 + s.nodes,
            Value::Dict(m) | Value::Namespace(m) => 1 + m.nodes,
            Value::Str(s) => 1 + s.len() as u64 / 16,
            Value::Tensor(t) => 1 + (t.size.len() + t.stride.len()) as u64 / 4,
            _ => 1,
        }
    }

    /// What the value is, for messages: `int 3`, `a str`, `a dict of 4 entries`.
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::BigInt(_) => "a long int".into(),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("str {:?}", s.chars().take(40).collect::<String>()),
            Value::Bytes(n) => format!("{n} bytes"),
            Value::Tuple(s) => format!("a tuple of {}", s.items.len()),
            Value::List(s) => format!("a list of {}", s.items.len()),
            Value::Dict(m) => format!("a dict of {} entries", m.items.len()),
            Value::Namespace(_) => "an argparse.Namespace".into(),
            Value::Global(k) => format!("the global {k:?}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Unknown(g) => format!("an object of `{g}`"),
        }
    }
}

/// Read one pickle (up to its STOP) into its top object.
pub fn read(p: &[u8]) -> Result<Value, String> {
    let budget = (p.len() as u64).saturating_mul(NODES_PER_BYTE).saturating_add(NODES_SLACK).min(MAX_NODES);
    let mut vm = Vm { p, i: 0, stack: vec![], marks: vec![], memo: HashMap::new(), made: 0, budget };
    vm.run()
}

struct Vm<'a> {
    p: &'a [u8],
    i: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    made: u64,
    budget: u64,
}

impl Vm<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let at = self.i;
        let end = at
            .checked_add(n)
            .filter(|&e| e <= self.p.len())
            .ok_or_else(|| format!("{what} at byte {at} needs {n} bytes, the pickle has {} left", self.p.len() - at))?;
        self.i = end;
        Ok(&self.p[at..end])
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn le(&mut self, n: usize, what: &str) -> Result<u64, String> {
        let b = self.take(n, what)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64))
    }

    fn line(&mut self, what: &str) -> Result<String, String> {
        let rest = &self.p[self.i..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("{what}: no newline before the end"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.i += n + 1;
        Ok(s)
    }

    fn count(&mut self, n: u64) -> Result<(), String> {
        self.made = self.made.saturating_add(n);
        if self.made > self.budget {
            return Err(format!(
                "the pickle makes more than {} objects from {} bytes (shared references copied over and over); \
                 torch's make fewer than one per byte",
                self.budget,
                self.p.len()
            ));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("more than {MAX_STACK} objects on the pickle stack"));
        }
        self.count(1)?;
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, op: &str) -> Result<Value, String> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) && !self.marks.is_empty() {
            return Err(format!("{op}: pops past a MARK"));
        }
        self.stack.pop().ok_or_else(|| format!("{op}: the stack is empty"))
    }

    fn pop_mark(&mut self, op: &str) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or_else(|| format!("{op}: no MARK"))?;
        if m > self.stack.len() {
            return Err(format!("{op}: MARK beyond the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn top(&mut self, op: &str) -> Result<&mut Value, String> {
        self.stack.last_mut().ok_or_else(|| format!("{op}: the stack is empty"))
    }

    fn str(&mut self, n: u64, op: &str) -> Result<(), String> {
        let n = usize::try_from(n).map_err(|_| format!("{op}: length {n}"))?;
        let s = std::str::from_utf8(self.take(n, op)?).map_err(|e| format!("{op}: not UTF-8 ({e})"))?.to_string();
        self.push(Value::Str(s))
    }

    fn bytes(&mut self, n: u64, op: &str) -> Result<(), String> {
        let n = usize::try_from(n).map_err(|_| format!("{op}: length {n}"))?;
        self.take(n, op)?;
        self.push(Value::Bytes(n))
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let v = self.top("PUT")?.clone();
        self.count(v.nodes())?;
        self.memo.insert(id, v);
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let v = self.memo.get(&id).cloned().ok_or_else(|| format!("GET {id}: nothing stored under it"))?;
        self.count(v.nodes())?;
        self.push(v)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let v = match known(module, name) {
            Some(k) => Value::Global(k),
            None => Value::Unknown(format!("{module}.{name}")),
        };
        self.push(v)
    }

    fn set_items(&mut self, items: Vec<Value>, op: &str) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("{op}: an odd number of objects ({})", items.len()));
        }
        let mut it = items.into_iter();
        let target = self.top(op)?;
        match target {
            Value::Dict(m) | Value::Namespace(m) => {
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    m.insert(k, v)?;
                }
            }
            Value::Unknown(_) => {}
            other => return Err(format!("{op} on {}, expected a dict", other.describe())),
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>, op: &str) -> Result<(), String> {
        match self.top(op)? {
            Value::List(s) => {
                for v in items {
                    s.push(v)?;
                }
            }
            Value::Unknown(_) => {}
            other => return Err(format!("{op} on {}, expected a list", other.describe())),
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.i;
            let op = self.u8("an opcode")?;
            let r = self.step(op);
            match r {
                Ok(true) => {
                    let top = self.stack.pop().ok_or("STOP with an empty stack")?;
                    return Ok(top);
                }
                Ok(false) => {}
                Err(e) => return Err(format!("opcode {op:#04x} at byte {at}: {e}")),
            }
        }
    }

    /// One opcode; `Ok(true)` at STOP.
    fn step(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'.' => return Ok(true),
            0x80 => {
                let v = self.u8("PROTO")?;
                if v > 5 {
                    return Err(format!("protocol {v}, expected 2 to 5"));
                }
            }
            0x95 => {
                self.take(8, "FRAME")?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop("POP")?;
            }
            b'1' => {
                self.pop_mark("POP_MARK")?;
            }
            b'2' => {
                let v = self.top("DUP")?.clone();
                self.count(v.nodes())?;
                self.push(v)?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'K' => {
                let v = self.le(1, "BININT1")?;
                self.push(Value::Int(v as i64))?
            }
            b'M' => {
                let v = self.le(2, "BININT2")?;
                self.push(Value::Int(v as i64))?
            }
            b'J' => {
                let v = self.le(4, "BININT")? as u32 as i32;
                self.push(Value::Int(v as i64))?
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { self.le(1, "LONG1")? } else { self.le(4, "LONG4")? };
                let n = usize::try_from(n).map_err(|_| "LONG: length".to_string())?;
                let b = self.take(n, "LONG")?;
                let v = if n == 0 {
                    Value::Int(0)
                } else if n <= 8 {
                    let mut x = b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64);
                    if n < 8 && b[n - 1] & 0x80 != 0 {
                        x |= u64::MAX << (8 * n);
                    }
                    Value::Int(x as i64)
                } else {
                    Value::BigInt(n)
                };
                self.push(v)?
            }
            b'G' => {
                let b = self.take(8, "BINFLOAT")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.push(Value::Float(f64::from_be_bytes(a)))?
            }
            b'X' => {
                let n = self.le(4, "BINUNICODE")?;
                self.str(n, "BINUNICODE")?
            }
            0x8c => {
                let n = self.le(1, "SHORT_BINUNICODE")?;
                self.str(n, "SHORT_BINUNICODE")?
            }
            0x8d => {
                let n = self.le(8, "BINUNICODE8")?;
                self.str(n, "BINUNICODE8")?
            }
            b'U' | b'C' => {
                let n = self.le(1, "SHORT_BINBYTES")?;
                self.bytes(n, "SHORT_BINBYTES")?
            }
            b'T' | b'B' => {
                let n = self.le(4, "BINBYTES")?;
                self.bytes(n, "BINBYTES")?
            }
            0x8e | 0x96 => {
                let n = self.le(8, "BINBYTES8")?;
                self.bytes(n, "BINBYTES8")?
            }
            b')' => self.push(Value::Tuple(Seq::default()))?,
            b't' => {
                let items = self.pop_mark("TUPLE")?;
                self.push(Value::Tuple(Seq::new(items)?))?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop("TUPLEn")?);
                }
                items.reverse();
                self.push(Value::Tuple(Seq::new(items)?))?
            }
            b']' => self.push(Value::List(Seq::default()))?,
            b'l' => {
                let items = self.pop_mark("LIST")?;
                self.push(Value::List(Seq::new(items)?))?
            }
            b'a' => {
                let v = self.pop("APPEND")?;
                self.append(vec![v], "APPEND")?
            }
            b'e' => {
                let items = self.pop_mark("APPENDS")?;
                self.append(items, "APPENDS")?
            }
            b'}' => self.push(Value::Dict(Map::default()))?,
            b'd' => {
                let items = self.pop_mark("DICT")?;
                self.push(Value::Dict(Map::default()))?;
                self.set_items(items, "DICT")?
            }
            b's' => {
                let v = self.pop("SETITEM")?;
                let k = self.pop("SETITEM")?;
                self.set_items(vec![k, v], "SETITEM")?
            }
            b'u' => {
                let items = self.pop_mark("SETITEMS")?;
                self.set_items(items, "SETITEMS")?
            }
            0x8f => self.push(Value::List(Seq::default()))?,
            0x90 => {
                let items = self.pop_mark("ADDITEMS")?;
                self.append(items, "ADDITEMS")?
            }
            0x91 => {
                let items = self.pop_mark("FROZENSET")?;
                self.push(Value::List(Seq::new(items)?))?
            }
            b'c' => {
                let module = self.line("GLOBAL")?;
                let name = self.line("GLOBAL")?;
                self.global(&module, &name)?
            }
            0x93 => {
                let name = self.pop("STACK_GLOBAL")?;
                let module = self.pop("STACK_GLOBAL")?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                    (m, n) => return Err(format!("STACK_GLOBAL of {} and {}", m.describe(), n.describe())),
                }
            }
            b'R' => {
                let args = self.pop("REDUCE")?;
                let f = self.pop("REDUCE")?;
                let v = apply(f, args)?;
                self.push(v)?
            }
            0x81 => {
                let args = self.pop("NEWOBJ")?;
                let cls = self.pop("NEWOBJ")?;
                let v = apply(cls, args)?;
                self.push(v)?
            }
            0x92 => {
                let _kwargs = self.pop("NEWOBJ_EX")?;
                let args = self.pop("NEWOBJ_EX")?;
                let cls = self.pop("NEWOBJ_EX")?;
                let v = apply(cls, args)?;
                self.push(v)?
            }
            b'b' => {
                let state = self.pop("BUILD")?;
                let obj = self.pop("BUILD")?;
                let v = build(obj, state)?;
                self.push(v)?
            }
            b'Q' => {
                let pid = self.pop("BINPERSID")?;
                let v = persistent(pid)?;
                self.push(v)?
            }
            b'h' => {
                let id = self.le(1, "BINGET")? as u32;
                self.memo_get(id)?
            }
            b'j' => {
                let id = self.le(4, "LONG_BINGET")? as u32;
                self.memo_get(id)?
            }
            b'q' => {
                let id = self.le(1, "BINPUT")? as u32;
                self.memo_put(id)?
            }
            b'r' => {
                let id = self.le(4, "LONG_BINPUT")? as u32;
                self.memo_put(id)?
            }
            0x94 => {
                let id = self.memo.len() as u32;
                self.memo_put(id)?
            }
            other => {
                return Err(format!(
                    "opcode {:?} is not one torch.save writes (protocols 2 to 5, binary opcodes only)",
                    other as char
                ))
            }
        }
        Ok(false)
    }
}

/// A call (REDUCE, NEWOBJ) of `f` on `args`, for the allowed globals; anything else gives [`Value::Unknown`].
fn apply(f: Value, args: Value) -> Result<Value, String> {
    let k = match f {
        Value::Global(k) => k,
        Value::Unknown(name) => return Ok(Value::Unknown(name)),
        other => return Ok(Value::Unknown(format!("a call of {}", other.describe()))),
    };
    let mut args = match args {
        Value::Tuple(s) => s.items,
        other => return Err(format!("{k:?} called with {}, expected a tuple", other.describe())),
    };
    Ok(match k {
        Known::RebuildTensorV2 => Value::Tensor(Box::new(tensor_ref(args)?)),
        Known::RebuildParameter | Known::RebuildParameterWithState => match args.into_iter().next() {
            Some(Value::Tensor(t)) => Value::Tensor(t),
            Some(other) => return Err(format!("_rebuild_parameter of {}, expected a tensor", other.describe())),
            None => return Err("_rebuild_parameter without arguments".into()),
        },
        Known::RebuildFromTypeV2 => {
            if args.len() < 3 {
                return Err(format!("_rebuild_from_type_v2 with {} arguments, expected 4", args.len()));
            }
            let inner = args.swap_remove(2);
            let func = args.swap_remove(0);
            return apply(func, inner);
        }
        Known::OrderedDict => {
            let mut m = Map::default();
            if let Some(Value::List(pairs) | Value::Tuple(pairs)) = args.into_iter().next() {
                for p in pairs.items {
                    match p {
                        Value::Tuple(mut kv) if kv.items.len() == 2 => {
                            let v = kv.items.pop().unwrap_or(Value::None);
                            let k = kv.items.pop().unwrap_or(Value::None);
                            m.insert(k, v)?;
                        }
                        other => return Err(format!("OrderedDict item {}, expected a pair", other.describe())),
                    }
                }
            }
            Value::Dict(m)
        }
        Known::Namespace => Value::Namespace(Map::default()),
        Known::Set => match args.into_iter().next() {
            Some(Value::List(s) | Value::Tuple(s)) => Value::List(s),
            None => Value::List(Seq::default()),
            Some(other) => return Err(format!("set of {}, expected a list", other.describe())),
        },
        Known::CodecsEncode => match args.first() {
            Some(Value::Str(s)) => Value::Bytes(s.chars().count()),
            _ => return Err("_codecs.encode without a string".into()),
        },
        Known::TensorClass | Known::Storage(_) => Value::Unknown(format!("a call of {k:?}")),
    })
}

/// BUILD: `obj.__setstate__(state)`, for the objects that take one.
fn build(obj: Value, state: Value) -> Result<Value, String> {
    Ok(match (obj, state) {
        // An OrderedDict's state is its attributes (`_metadata`), not entries.
        (Value::Dict(m), _) => Value::Dict(m),
        (Value::Namespace(mut m), Value::Dict(attrs)) => {
            for (k, v) in attrs.items {
                m.insert(k, v)?;
            }
            Value::Namespace(m)
        }
        (Value::Tensor(t), _) => Value::Tensor(t),
        (Value::Unknown(g), _) => Value::Unknown(g),
        (other, _) => Value::Unknown(format!("the state of {}", other.describe())),
    })
}

/// `BINPERSID` of `('storage', torch.<T>Storage, key, location, numel)`.
fn persistent(pid: Value) -> Result<Value, String> {
    let items = match pid {
        Value::Tuple(s) => s.items,
        other => return Err(format!("persistent id {}, expected a ('storage', ...) tuple", other.describe())),
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Known::Storage(dtype)), Value::Str(key), _location, Value::Int(numel)]
            if tag == "storage" && *numel >= 0 =>
        {
            Ok(Value::Storage(Box::new(StorageRef { key: key.clone(), dtype: *dtype, numel: *numel as u64 })))
        }
        [_, Value::Unknown(g), ..] => Err(format!("persistent id names storage type `{g}`, not a typed torch storage")),
        _ => Err(format!(
            "persistent id of {} items, expected ('storage', torch.<T>Storage, key, location, numel)",
            items.len()
        )),
    }
}

fn ints(v: Value, what: &str) -> Result<Vec<u64>, String> {
    match v {
        Value::Tuple(s) => s
            .items
            .into_iter()
            .map(|x| match x {
                Value::Int(i) if i >= 0 => Ok(i as u64),
                other => Err(format!("{what}: {}, expected a non-negative int", other.describe())),
            })
            .collect(),
        other => Err(format!("{what} is {}, expected a tuple", other.describe())),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
fn tensor_ref(args: Vec<Value>) -> Result<TensorRef, String> {
    if args.len() < 4 {
        return Err(format!("_rebuild_tensor_v2 with {} arguments, expected at least 4", args.len()));
    }
    let mut it = args.into_iter();
    let (storage, offset, size, stride) = (it.next(), it.next(), it.next(), it.next());
    let storage = match storage {
        Some(Value::Storage(s)) => *s,
        Some(other) => return Err(format!("_rebuild_tensor_v2 of {}, expected a storage", other.describe())),
        None => return Err("_rebuild_tensor_v2 without a storage".into()),
    };
    let offset = match offset {
        Some(Value::Int(o)) if o >= 0 => o as u64,
        _ => return Err("_rebuild_tensor_v2: the offset is not a non-negative int".into()),
    };
    let size = ints(size.unwrap_or(Value::None), "size")?;
    let stride = ints(stride.unwrap_or(Value::None), "stride")?;
    if size.len() != stride.len() {
        return Err(format!("size has {} dims but stride {}", size.len(), stride.len()));
    }
    Ok(TensorRef { storage, offset, size, stride })
}

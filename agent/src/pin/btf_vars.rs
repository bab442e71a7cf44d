//! The global variables an object declares, read from its own BTF: enough to check a
//! `globalData` override against the declared type of the variable it replaces, and to name
//! that type in the error. (aya compares an override with the ELF symbol's size only, and where
//! an object has no BTF that remains the check.)
//!
//! The format is the kernel's (`Documentation/bpf/btf.rst`): a header, then the type section
//! (each `struct btf_type` followed by kind-specific data), then the string section.

use std::collections::BTreeMap;

/// A global variable of a `.rodata*`, `.data*` or `.bss*` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalVar {
    /// The section it lives in.
    pub section: String,
    /// Its size in bytes, from its type.
    pub size: u64,
    /// Its type as C would spell it (qualifiers left out), e.g. `__u64`, `char[16]`.
    pub type_name: String,
}

const BTF_MAGIC: u16 = 0xeb9f;

// Kinds (include/uapi/linux/btf.h).
const INT: u8 = 1;
const PTR: u8 = 2;
const ARRAY: u8 = 3;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const ENUM: u8 = 6;
const FWD: u8 = 7;
const TYPEDEF: u8 = 8;
const VOLATILE: u8 = 9;
const CONST: u8 = 10;
const RESTRICT: u8 = 11;
const FUNC: u8 = 12;
const FUNC_PROTO: u8 = 13;
const VAR: u8 = 14;
const DATASEC: u8 = 15;
const FLOAT: u8 = 16;
const DECL_TAG: u8 = 17;
const TYPE_TAG: u8 = 18;
const ENUM64: u8 = 19;

#[derive(Debug, Clone, Copy)]
struct Type {
    kind: u8,
    name_off: u32,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    vlen: u16,
    /// Offset of the kind-specific data in the type section.
    data: usize,
}

/// A global-data section: its name, and its entries with their sizes.
type DataSection<'a> = (&'a str, Vec<(Type, u64)>);

struct Btf<'a> {
    types: Vec<Type>,
    type_section: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Parses raw BTF in the host's byte order (what `aya_obj::btf::Btf::to_bytes` writes).
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let magic = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
        if magic != BTF_MAGIC {
            return None;
        }
        let hdr_len = u32_at(raw, 4)? as usize;
        let (type_off, type_len) = (u32_at(raw, 8)? as usize, u32_at(raw, 12)? as usize);
        let (str_off, str_len) = (u32_at(raw, 16)? as usize, u32_at(raw, 20)? as usize);
        let type_section = raw.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = raw.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        // Type id 0 is `void`.
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            size_or_type: 0,
            vlen: 0,
            data: 0,
        }];
        let mut off = 0;
        while off < type_section.len() {
            let name_off = u32_at(type_section, off)?;
            let info = u32_at(type_section, off + 4)?;
            let size_or_type = u32_at(type_section, off + 8)?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as u16;
            let data = off + 12;
            let n = usize::from(vlen);
            let extra = match kind {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * n,
                ENUM | FUNC_PROTO => 8 * n,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                _ => return None,
            };
            types.push(Type {
                kind,
                name_off,
                size_or_type,
                vlen,
                data,
            });
            off = data + extra;
        }
        Some(Self {
            types,
            type_section,
            strings,
        })
    }

    fn name(&self, t: &Type) -> &'a str {
        let rest = self.strings.get(t.name_off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    fn data(&self, t: &Type, i: usize) -> Option<u32> {
        u32_at(self.type_section, t.data + 4 * i)
    }

    /// The size of type `id` in bytes.
    fn size(&self, id: u32, depth: u32) -> Option<u64> {
        if depth > 32 {
            return None;
        }
        let t = self.get(id)?;
        match t.kind {
            INT | STRUCT | UNION | ENUM | ENUM64 | FLOAT | DATASEC => Some(t.size_or_type.into()),
            // BPF is a 64-bit target.
            PTR => Some(8),
            ARRAY => {
                let (elem, nelems) = (self.data(t, 0)?, self.data(t, 2)?);
                Some(self.size(elem, depth + 1)? * u64::from(nelems))
            }
            TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | VAR => {
                self.size(t.size_or_type, depth + 1)
            }
            _ => None,
        }
    }

    /// Type `id` as C would spell it, without qualifiers.
    fn spell(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.get(id).filter(|_| depth <= 32) else {
            return "?".into();
        };
        let name = self.name(t);
        let or_anon = |s: &str| if s.is_empty() { "<anonymous>" } else { s }.to_owned();
        match t.kind {
            0 => "void".into(),
            VOLATILE | CONST | RESTRICT | TYPE_TAG => self.spell(t.size_or_type, depth + 1),
            PTR => format!("{} *", self.spell(t.size_or_type, depth + 1)),
            ARRAY => match (self.data(t, 0), self.data(t, 2)) {
                (Some(elem), Some(n)) => format!("{}[{n}]", self.spell(elem, depth + 1)),
                _ => "?[]".into(),
            },
            STRUCT => format!("struct {}", or_anon(name)),
            UNION => format!("union {}", or_anon(name)),
            ENUM | ENUM64 => format!("enum {}", or_anon(name)),
            _ => or_anon(name),
        }
    }

    /// The entries of each `.rodata*`, `.data*` and `.bss*` DATASEC, in the order the section
    /// holds them (clang writes a DATASEC in address order), each with its size (its type's, or
    /// the DATASEC's where the type has none); `None` when an entry cannot be read.
    fn data_sections(&self) -> Option<Vec<DataSection<'a>>> {
        let mut out = Vec::new();
        for sec in self.types.iter().filter(|t| t.kind == DATASEC) {
            let section = self.name(sec);
            if ![".rodata", ".data", ".bss"]
                .iter()
                .any(|p| section.starts_with(p))
            {
                continue;
            }
            let mut vars = Vec::new();
            for i in 0..usize::from(sec.vlen) {
                let (var_id, secinfo_size) = (self.data(sec, 3 * i)?, self.data(sec, 3 * i + 2)?);
                let var = *self.get(var_id)?;
                let size = self
                    .size(var.size_or_type, 0)
                    .unwrap_or(secinfo_size.into());
                vars.push((var, size));
            }
            out.push((section, vars));
        }
        Some(out)
    }
}

/// The global variables declared in `raw` BTF, by name; `None` when it cannot be read.
pub fn global_vars(raw: &[u8]) -> Option<BTreeMap<String, GlobalVar>> {
    let btf = Btf::parse(raw)?;
    let mut vars = BTreeMap::new();
    for (section, entries) in btf.data_sections()? {
        for (var, size) in entries.into_iter().filter(|(v, _)| v.kind == VAR) {
            let global = GlobalVar {
                section: section.to_owned(),
                size,
                type_name: btf.spell(var.size_or_type, 0),
            };
            vars.insert(btf.name(&var).to_owned(), global);
        }
    }
    Some(vars)
}

/// The variables of each `.rodata*`, `.data*` and `.bss*` section, in the order the section
/// holds them, each as `name: type (size)`; `None` when `raw` cannot be read. Two objects whose
/// lists agree lay out that section alike: what decides whether a pinned internal map can serve
/// a new load ([`super::internal_maps`]).
pub fn section_layouts(raw: &[u8]) -> Option<BTreeMap<String, Vec<String>>> {
    let btf = Btf::parse(raw)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (section, entries) in btf.data_sections()? {
        let vars = out.entry(section.to_owned()).or_default();
        for (var, size) in entries {
            let ty = btf.spell(var.size_or_type, 0);
            vars.push(format!("{}: {ty} ({size})", btf.name(&var)));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds raw BTF from (kind, name, size_or_type, vlen, data words) and a string table.
    fn raw(types: &[(u8, u32, u32, u16, Vec<u32>)], strings: &[u8]) -> Vec<u8> {
        let mut ty = Vec::new();
        for (kind, name, sot, vlen, data) in types {
            ty.extend(name.to_ne_bytes());
            ty.extend(((u32::from(*kind) << 24) | u32::from(*vlen)).to_ne_bytes());
            ty.extend(sot.to_ne_bytes());
            for d in data {
                ty.extend(d.to_ne_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend(BTF_MAGIC.to_ne_bytes());
        out.extend([1u8, 0]);
        for v in [
            24u32,
            0,
            ty.len() as u32,
            ty.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(v.to_ne_bytes());
        }
        out.extend(ty);
        out.extend(strings);
        out
    }

    #[test]
    fn sizes_and_names_come_from_the_types() {
        // 1 int "u32"(4) · 2 array of 1 x 3 · 3 const → 2 · 4 typedef "t" → 1 · 5 var "A" : 3
        // 6 var "B" : 4 · 7 struct (anonymous, 16) · 8 var "C" : 7 · 9 datasec ".rodata" (A, B, C)
        // 10 datasec ".maps" (ignored)
        let strings = b"\0u32\0t\0A\0B\0.rodata\0C\0.maps\0";
        let at = |s: &str| {
            strings
                .windows(s.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
                .expect("string") as u32
                + 1
        };
        let types = vec![
            (INT, at("u32"), 4, 0, vec![32]),
            (ARRAY, 0, 0, 0, vec![1, 1, 3]),
            (CONST, 0, 2, 0, vec![]),
            (TYPEDEF, at("t"), 1, 0, vec![]),
            (VAR, at("A"), 3, 0, vec![1]),
            (VAR, at("B"), 4, 0, vec![1]),
            (STRUCT, 0, 16, 0, vec![]),
            (VAR, at("C"), 7, 0, vec![1]),
            (
                DATASEC,
                at(".rodata"),
                32,
                3,
                vec![5, 0, 12, 6, 12, 4, 8, 16, 16],
            ),
            (DATASEC, at(".maps"), 0, 1, vec![6, 0, 4]),
        ];
        let vars = global_vars(&raw(&types, strings)).expect("parses");
        assert_eq!(vars.len(), 3, "{vars:?}");
        assert_eq!(
            vars["A"],
            GlobalVar {
                section: ".rodata".into(),
                size: 12,
                type_name: "u32[3]".into()
            }
        );
        assert_eq!((vars["B"].size, vars["B"].type_name.as_str()), (4, "t"));
        assert_eq!(
            (vars["C"].size, vars["C"].type_name.as_str()),
            (16, "struct <anonymous>")
        );
    }

    #[test]
    fn section_layouts_keep_the_order_of_the_section() {
        // 1 int "u64"(8) · 2 var "b" : 1 · 3 var "a" : 1 · 4 datasec ".bss" (b, a) · 5 datasec
        // ".maps" (ignored)
        let strings = b"\0u64\0b\0a\0.bss\0.maps\0";
        let types = vec![
            (INT, 1, 8, 0, vec![64]),
            (VAR, 5, 1, 0, vec![1]),
            (VAR, 7, 1, 0, vec![1]),
            (DATASEC, 9, 16, 2, vec![2, 0, 8, 3, 8, 8]),
            (DATASEC, 14, 0, 1, vec![2, 0, 8]),
        ];
        let layouts = section_layouts(&raw(&types, strings)).expect("parses");
        assert_eq!(layouts.len(), 1, "{layouts:?}");
        assert_eq!(layouts[".bss"], ["b: u64 (8)", "a: u64 (8)"]);
        assert_eq!(section_layouts(b"not btf"), None);
    }

    #[test]
    fn garbage_is_not_btf() {
        assert_eq!(global_vars(b"not btf at all, not at all"), None);
        assert_eq!(global_vars(&[]), None);
    }
}

//! bpfpin patch: `.kconfig` externs, as libbpf resolves them.
//!
//! A BPF C object may declare `extern <type> NAME __kconfig;` (libbpf's `usdt.bpf.h` reads
//! `LINUX_HAS_BPF_COOKIE` this way, `bpf_tracing.h`'s `BPF_KSYSCALL` `LINUX_HAS_SYSCALL_WRAPPER`).
//! clang leaves such a variable undefined in the symbol table and lists it in a BTF DATASEC named
//! `.kconfig` with extern linkage. libbpf lays these variables out in one read-only internal map,
//! fills it from the kernel's configuration (`CONFIG_*`) and from values it computes itself
//! (`LINUX_*`), and relocates every load of a variable to that map's value.
//!
//! [`Object::parse`] does the layout: a `.kconfig` map (kind [`EbpfSectionKind::Rodata`], zeroed)
//! whose section index is [`KCONFIG_SECTION_INDEX`] (no ELF section has it), each extern symbol
//! placed in it (so the ordinary data-map relocation points its loads at its offset), and the BTF
//! variables made allocated globals with their offsets (the kernel refuses extern variables).
//! [`Object::set_kconfig`] fills the values before the maps are made.

use object::SectionIndex;

use crate::{
    EbpfSectionKind, Object,
    btf::{BtfType, IntEncoding, VarLinkage},
    generated::{BPF_F_RDONLY_PROG, bpf_map_type::BPF_MAP_TYPE_ARRAY},
    maps::{LegacyMap, Map, bpf_map_def},
    util::{HashMap, HashSet},
};

/// The name of the internal map (and BTF DATASEC) of `.kconfig` externs.
pub const KCONFIG_SECTION: &str = ".kconfig";

/// The section index given to the `.kconfig` map: beyond any ELF section index (those are
/// 32-bit), so it never names a real section.
pub const KCONFIG_SECTION_INDEX: usize = u32::MAX as usize + 1;

/// What a `.kconfig` extern is, from its BTF type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KconfigKind {
    /// `bool` / `_Bool`: `y` is 1, `n` is 0.
    Bool,
    /// `char`: the letter `y`, `n` or `m` itself.
    Char,
    /// An enum (libbpf's `enum libbpf_tristate`): `n` 0, `y` 1, `m` 2.
    Tristate,
    /// An integer of `size` bytes: a number.
    Int {
        /// Whether the type is signed.
        signed: bool,
    },
    /// `char[len]`: a string value, NUL-terminated, cut to fit.
    CharArray,
}

/// One `.kconfig` extern and its place in the `.kconfig` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KconfigExtern {
    /// The variable's name (`LINUX_HAS_BPF_COOKIE`, `CONFIG_HZ`).
    pub name: String,
    /// Its offset in the map's value.
    pub offset: usize,
    /// Its size in bytes.
    pub size: usize,
    /// What it is.
    pub kind: KconfigKind,
    /// Declared `__weak`: a value nobody knows is zero instead of an error.
    pub weak: bool,
}

/// A value for a `.kconfig` extern: what the kernel's configuration file says of a `CONFIG_*`
/// option (`y`, `m`, `n`, a number or a quoted string), or a value the loader computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KconfigValue {
    /// `y`, `m` or `n`.
    Tristate(u8),
    /// A number (decimal, or hexadecimal with `0x`).
    Number(i64),
    /// A string (the quotes removed).
    String(String),
}

/// Why a `.kconfig` extern could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    /// The type of a `.kconfig` variable is not one libbpf accepts either.
    #[error(
        "kconfig extern {name}: unsupported type (bool, char, an enum, an integer or a char array)"
    )]
    UnsupportedType {
        /// The variable.
        name: String,
    },
    /// A non-weak extern nobody has a value for.
    #[error(
        "kconfig extern {name} is not set by this kernel's configuration (declare it __weak to read 0 instead)"
    )]
    Unresolved {
        /// The variable.
        name: String,
    },
    /// The value does not fit the variable's type (`m` for a bool, a string for an int...).
    #[error("kconfig extern {name}: value {value} does not fit its type ({kind:?}, {size} bytes)")]
    BadValue {
        /// The variable.
        name: String,
        /// The value, as the configuration wrote it.
        value: String,
        /// The variable's kind.
        kind: KconfigKind,
        /// Its size.
        size: usize,
    },
}

/// Parses a kernel configuration file (`/boot/config-$(uname -r)`, or `/proc/config.gz`
/// decompressed): `CONFIG_X=y|m|<number>|"<string>"`, and `# CONFIG_X is not set` as `n`.
pub fn parse_kconfig(text: &str) -> HashMap<String, KconfigValue> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") {
                    out.insert(name.into(), KconfigValue::Tristate(b'n'));
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("CONFIG_") {
            continue;
        }
        let value = match value {
            "y" => KconfigValue::Tristate(b'y'),
            "m" => KconfigValue::Tristate(b'm'),
            "n" => KconfigValue::Tristate(b'n'),
            v if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => KconfigValue::String(
                v[1..v.len() - 1]
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\"),
            ),
            v => {
                let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(hex) => i64::from_str_radix(hex, 16).ok(),
                    None => v.parse::<i64>().ok(),
                };
                match parsed {
                    Some(n) => KconfigValue::Number(n),
                    None => continue,
                }
            }
        };
        out.insert(name.into(), value);
    }
    out
}

impl Object {
    /// The `.kconfig` externs of the object (empty when it has none).
    pub fn kconfig_externs(&self) -> &[KconfigExtern] {
        &self.kconfig_externs
    }

    /// Lays out the `.kconfig` externs (see the module's documentation). `weak` holds the names of
    /// the undefined weak symbols. Called by `parse` once the BTF and the symbols are read.
    pub(crate) fn collect_kconfig(&mut self, weak: &HashSet<String>) -> Result<(), KconfigError> {
        let Some(btf) = self.btf.as_mut() else {
            return Ok(());
        };
        // The DATASEC `.kconfig` and its variables, in order.
        let mut vars = Vec::new();
        for t in &btf.types.types {
            if let BtfType::DataSec(d) = t {
                if btf.string_at(d.name_offset).ok().as_deref() == Some(KCONFIG_SECTION) {
                    vars.extend(d.entries.iter().map(|e| e.btf_type));
                }
            }
        }
        if vars.is_empty() {
            return Ok(());
        }
        let mut externs = Vec::new();
        let mut var_ids = Vec::new();
        let mut offset = 0usize;
        for var_id in vars {
            let Ok(BtfType::Var(var)) = btf.type_by_id(var_id) else {
                continue;
            };
            let name = btf
                .string_at(var.name_offset)
                .map(|n| n.into_owned())
                .unwrap_or_default();
            let unsupported = || KconfigError::UnsupportedType { name: name.clone() };
            let ty = btf.resolve_type(var.btf_type).map_err(|_| unsupported())?;
            let (kind, size, align) = match btf.type_by_id(ty).map_err(|_| unsupported())? {
                BtfType::Int(i) => {
                    let size = i.size as usize;
                    let kind = match i.encoding() {
                        IntEncoding::Bool if size == 1 => KconfigKind::Bool,
                        IntEncoding::Char if size == 1 => KconfigKind::Char,
                        IntEncoding::Signed => KconfigKind::Int { signed: true },
                        IntEncoding::None => KconfigKind::Int { signed: false },
                        _ => return Err(unsupported()),
                    };
                    (kind, size, size)
                }
                BtfType::Enum(e) => (KconfigKind::Tristate, e.size as usize, e.size as usize),
                BtfType::Array(a) => {
                    let elem = btf
                        .resolve_type(a.array.element_type)
                        .and_then(|t| btf.type_by_id(t))
                        .map_err(|_| unsupported())?;
                    match elem {
                        BtfType::Int(i) if i.size == 1 => {
                            (KconfigKind::CharArray, a.array.len as usize, 1)
                        }
                        _ => return Err(unsupported()),
                    }
                }
                _ => return Err(unsupported()),
            };
            if !matches!(size, 1 | 2 | 4 | 8) && kind != KconfigKind::CharArray {
                return Err(unsupported());
            }
            offset = offset.next_multiple_of(align.clamp(1, 8));
            externs.push(KconfigExtern {
                weak: weak.contains(&name),
                name,
                offset,
                size,
                kind,
            });
            offset += size;
            var_ids.push(var_id);
        }
        let value_size = offset.max(1);
        // The variables become allocated globals of the DATASEC (the kernel refuses extern VARs);
        // `fixup_and_sanitize` sets the DATASEC's size and offsets from what is recorded here.
        for id in var_ids {
            if let Some(BtfType::Var(v)) = btf.types.types.get_mut(id as usize) {
                if v.linkage == VarLinkage::Extern {
                    v.linkage = VarLinkage::Global;
                }
            }
        }
        for e in &externs {
            let _ = self
                .symbol_offset_by_name
                .insert(e.name.clone(), e.offset as u64);
            for sym in self.symbol_table.values_mut() {
                if sym.section_index.is_none() && sym.name.as_deref() == Some(e.name.as_str()) {
                    sym.section_index = Some(KCONFIG_SECTION_INDEX);
                    sym.address = e.offset as u64;
                }
            }
        }
        let _ = self.section_infos.insert(
            KCONFIG_SECTION.into(),
            (SectionIndex(KCONFIG_SECTION_INDEX), value_size as u64),
        );
        drop(self.maps.insert(
            KCONFIG_SECTION.into(),
            Map::Legacy(LegacyMap {
                def: bpf_map_def {
                    map_type: BPF_MAP_TYPE_ARRAY as u32,
                    key_size: size_of::<u32>() as u32,
                    value_size: value_size as u32,
                    max_entries: 1,
                    map_flags: BPF_F_RDONLY_PROG,
                    ..Default::default()
                },
                inner_def: None,
                section_index: KCONFIG_SECTION_INDEX,
                section_kind: EbpfSectionKind::Rodata,
                symbol_index: None,
                data: vec![0; value_size],
            }),
        ));
        self.kconfig_externs = externs;
        Ok(())
    }

    /// Writes the value of every `.kconfig` extern into the `.kconfig` map: `value(name)` is the
    /// configuration's value of the option (or the loader's, for `LINUX_*`). A weak extern without
    /// a value stays 0; a strong one is [`KconfigError::Unresolved`].
    pub fn set_kconfig(
        &mut self,
        value: impl Fn(&str) -> Option<KconfigValue>,
    ) -> Result<(), KconfigError> {
        let Some(Map::Legacy(map)) = self.maps.get_mut(KCONFIG_SECTION) else {
            return Ok(());
        };
        for e in &self.kconfig_externs {
            let slot = &mut map.data[e.offset..e.offset + e.size];
            slot.fill(0);
            let Some(v) = value(&e.name) else {
                if e.weak {
                    continue;
                }
                return Err(KconfigError::Unresolved {
                    name: e.name.clone(),
                });
            };
            let bad = || KconfigError::BadValue {
                name: e.name.clone(),
                value: match &v {
                    KconfigValue::Tristate(c) => char::from(*c).to_string(),
                    KconfigValue::Number(n) => n.to_string(),
                    KconfigValue::String(s) => format!("\"{s}\""),
                },
                kind: e.kind,
                size: e.size,
            };
            match (e.kind, &v) {
                (KconfigKind::Bool, KconfigValue::Tristate(b'y')) => slot[0] = 1,
                (KconfigKind::Bool, KconfigValue::Tristate(b'n')) => slot[0] = 0,
                (KconfigKind::Bool, KconfigValue::Number(n @ (0 | 1))) => slot[0] = *n as u8,
                (KconfigKind::Char, KconfigValue::Tristate(c)) => slot[0] = *c,
                (KconfigKind::Tristate, KconfigValue::Tristate(c)) => {
                    let n: u32 = match c {
                        b'y' => 1,
                        b'm' => 2,
                        _ => 0,
                    };
                    write_int(slot, n.into(), self.endianness);
                }
                (KconfigKind::Int { signed }, KconfigValue::Number(n)) => {
                    let bits = e.size * 8;
                    let fits = if bits == 64 {
                        signed || *n >= 0
                    } else if signed {
                        *n >= -(1i64 << (bits - 1)) && *n < (1i64 << (bits - 1))
                    } else {
                        *n >= 0 && *n < (1i64 << bits)
                    };
                    if !fits {
                        return Err(bad());
                    }
                    write_int(slot, *n as u64, self.endianness);
                }
                (KconfigKind::CharArray, KconfigValue::String(s)) => {
                    let bytes = s.as_bytes();
                    let n = bytes.len().min(e.size.saturating_sub(1));
                    slot[..n].copy_from_slice(&bytes[..n]);
                }
                _ => return Err(bad()),
            }
        }
        Ok(())
    }
}

fn write_int(slot: &mut [u8], n: u64, endianness: object::Endianness) {
    let bytes = match endianness {
        object::Endianness::Little => n.to_le_bytes(),
        object::Endianness::Big => n.to_be_bytes(),
    };
    match endianness {
        object::Endianness::Little => slot.copy_from_slice(&bytes[..slot.len()]),
        object::Endianness::Big => slot.copy_from_slice(&bytes[8 - slot.len()..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object with these externs laid out one after another, as `collect_kconfig` would.
    fn object(externs: &[(&str, usize, KconfigKind, bool)]) -> Object {
        let mut obj = Object::new(
            object::Endianness::Little,
            std::ffi::CString::new("GPL").unwrap(),
            None,
        );
        let mut offset = 0;
        for &(name, size, kind, weak) in externs {
            obj.kconfig_externs.push(KconfigExtern {
                name: name.into(),
                offset,
                size,
                kind,
                weak,
            });
            offset += size;
        }
        drop(obj.maps.insert(
            KCONFIG_SECTION.into(),
            Map::Legacy(LegacyMap {
                def: bpf_map_def::default(),
                inner_def: None,
                section_index: KCONFIG_SECTION_INDEX,
                section_kind: EbpfSectionKind::Rodata,
                symbol_index: None,
                data: vec![0xaa; offset],
            }),
        ));
        obj
    }

    fn data(obj: &Object) -> &[u8] {
        obj.maps[KCONFIG_SECTION].data()
    }

    #[test]
    fn values_follow_libbpfs_rules() {
        use KconfigKind::*;
        let mut obj = object(&[
            ("B", 1, Bool, false),
            ("C", 1, Char, false),
            ("T", 4, Tristate, false),
            ("I", 2, Int { signed: true }, false),
            ("U", 8, Int { signed: false }, false),
            ("S", 4, CharArray, false),
            ("W", 4, Int { signed: false }, true),
        ]);
        let config = parse_kconfig(
            "B=\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_T=m\nCONFIG_I=-2\nCONFIG_U=0x10\nCONFIG_S=\"abcdef\"\n",
        );
        let value = |name: &str| config.get(&format!("CONFIG_{name}")).cloned();
        obj.set_kconfig(value).unwrap();
        assert_eq!(
            data(&obj),
            &[
                1, b'm', 2, 0, 0, 0, 0xfe, 0xff, 0x10, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c', 0, 0,
                0, 0, 0
            ]
        );

        // A strong extern without a value, and values that do not fit.
        let mut obj = object(&[("X", 1, Bool, false)]);
        let err = obj.set_kconfig(|_| None).unwrap_err();
        assert!(matches!(err, KconfigError::Unresolved { ref name } if name == "X"));
        let err = obj
            .set_kconfig(|_| Some(KconfigValue::Tristate(b'm')))
            .unwrap_err();
        assert!(matches!(err, KconfigError::BadValue { .. }), "{err}");
        let mut obj = object(&[("X", 1, Int { signed: false }, false)]);
        let err = obj
            .set_kconfig(|_| Some(KconfigValue::Number(256)))
            .unwrap_err();
        assert!(err.to_string().contains("value 256 does not fit"), "{err}");
        let mut obj = object(&[("X", 1, Int { signed: true }, false)]);
        obj.set_kconfig(|_| Some(KconfigValue::Number(-128)))
            .unwrap();
        assert_eq!(data(&obj), &[0x80]);
        let err = obj
            .set_kconfig(|_| Some(KconfigValue::String("s".into())))
            .unwrap_err();
        assert!(matches!(err, KconfigError::BadValue { .. }), "{err}");
    }

    #[test]
    fn config_lines() {
        let c = parse_kconfig(
            "# comment\nCONFIG_BPF=y\nCONFIG_M=m\n# CONFIG_KPROBES is not set\nCONFIG_HZ=250\nCONFIG_X=0x10\nCONFIG_S=\"a \\\"b\\\"\"\nOTHER=y\n",
        );
        assert_eq!(c.get("CONFIG_BPF"), Some(&KconfigValue::Tristate(b'y')));
        assert_eq!(c.get("CONFIG_M"), Some(&KconfigValue::Tristate(b'm')));
        assert_eq!(c.get("CONFIG_KPROBES"), Some(&KconfigValue::Tristate(b'n')));
        assert_eq!(c.get("CONFIG_HZ"), Some(&KconfigValue::Number(250)));
        assert_eq!(c.get("CONFIG_X"), Some(&KconfigValue::Number(16)));
        assert_eq!(
            c.get("CONFIG_S"),
            Some(&KconfigValue::String("a \"b\"".into()))
        );
        assert_eq!(c.get("OTHER"), None);
        assert_eq!(c.len(), 6);
    }
}

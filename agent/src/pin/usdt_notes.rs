//! USDT probes of an ELF file: the SystemTap notes (`.note.stapsdt`) that `<sys/sdt.h>`'s
//! `DTRACE_PROBEn` / `STAP_PROBEn` leave, and each probe argument translated into the
//! `struct __bpf_usdt_arg_spec` that libbpf's `<bpf/usdt.bpf.h>` reads (pure: bytes in, sites
//! out).
//!
//! A note (type 3, owner `stapsdt`) holds three addresses, the probe's `pc`, the link-time
//! address of the `.stapsdt.base` section and the address of the probe's semaphore (0 when it has
//! none), then three strings: provider, name, and the arguments, e.g. `-4@%edi 8@-16(%rbp) -4@$42`
//! (`[-]size@location`, `-` for signed). When the file was prelinked, `.stapsdt.base` moved: the
//! difference is added to `pc` and the semaphore, as libbpf does. A uprobe is attached at the file
//! offset of `pc` (through the `PT_LOAD` segment holding it); the semaphore's file offset is the
//! reference counter the kernel increments while the probe is attached.
//!
//! Only x86-64 ELF64 files are read: the argument locations are x86-64 registers (`%rdi`,
//! `%eax`, `%r12d`, `%dx`, `%sil`...), constants (`$-9`) and register-relative memory
//! (`-1204(%rbp)`, `(%rax)`); an indexed location (`8(%rax,%rbx,8)`) or a `%rip`-relative symbol
//! is refused, as libbpf refuses them.

use std::fmt;

/// The most arguments libbpf's `usdt.bpf.h` holds (`BPF_USDT_MAX_ARG_CNT`).
pub const MAX_ARGS: usize = 12;
/// The size of `struct __bpf_usdt_arg_spec`.
pub const ARG_SPEC_SIZE: usize = 16;
/// The size of `struct __bpf_usdt_spec`: 12 argument specs, `usdt_cookie` (u64), `arg_cnt`
/// (short), padded to 8.
pub const SPEC_SIZE: usize = 208;

/// Why a file's USDT notes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotesError {
    /// Not an ELF64 little-endian x86-64 file.
    #[error("not an x86-64 ELF64 file ({0})")]
    NotElf(&'static str),
    /// A header or table runs outside the file.
    #[error("truncated or malformed ELF: {0}")]
    Malformed(&'static str),
    /// The file has no `.note.stapsdt` section.
    #[error("the file has no USDT notes (no .note.stapsdt section)")]
    NoNotes,
    /// A probe's `pc` is in no `PT_LOAD` segment.
    #[error("USDT {0}:{1} at {2:#x}: the address is in no loadable segment")]
    Unmapped(String, String, u64),
    /// A probe's argument string could not be translated: `(provider, name, argument, why)`.
    #[error("USDT {0}:{1}: argument `{2}`: {3}")]
    Argument(String, String, String, &'static str),
    /// More arguments than usdt.bpf.h holds.
    #[error("USDT {0}:{1} has {2} arguments; libbpf's usdt.bpf.h holds at most 12")]
    TooManyArgs(String, String, usize),
}

/// Where a probe argument is (libbpf's `enum __bpf_usdt_arg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgLocation {
    /// `$imm`: the value itself (`BPF_USDT_ARG_CONST`).
    Const(i64),
    /// `%reg`: a register, by its offset in the kernel's x86-64 `struct pt_regs`
    /// (`BPF_USDT_ARG_REG`).
    Reg(i16),
    /// `off(%reg)`: memory at the register plus `off` (`BPF_USDT_ARG_REG_DEREF`).
    RegDeref(i16, i64),
}

/// One probe argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsdtArg {
    /// Its size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Whether it is signed (`-4@...`).
    pub signed: bool,
    /// Where it is.
    pub location: ArgLocation,
}

impl UsdtArg {
    /// `struct __bpf_usdt_arg_spec` (little-endian): `val_off` (u64), `arg_type` (enum, u32),
    /// `reg_off` (short), `arg_signed` (bool), `arg_bitshift` (char: 64 - size * 8).
    pub fn spec_bytes(&self) -> [u8; ARG_SPEC_SIZE] {
        let (val_off, arg_type, reg_off): (u64, u32, i16) = match self.location {
            ArgLocation::Const(v) => (v as u64, 0, 0),
            ArgLocation::Reg(r) => (0, 1, r),
            ArgLocation::RegDeref(r, off) => (off as u64, 2, r),
        };
        let mut b = [0u8; ARG_SPEC_SIZE];
        b[0..8].copy_from_slice(&val_off.to_le_bytes());
        b[8..12].copy_from_slice(&arg_type.to_le_bytes());
        b[12..14].copy_from_slice(&reg_off.to_le_bytes());
        b[14] = u8::from(self.signed);
        b[15] = 64 - self.size * 8;
        b
    }
}

/// One probe site of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsdtSite {
    /// The provider (`DTRACE_PROBEn`'s first argument).
    pub provider: String,
    /// The probe's name.
    pub name: String,
    /// The probe's address (prelink-adjusted), as the note gives it.
    pub pc: u64,
    /// The file offset of `pc`: where the uprobe goes.
    pub offset: u64,
    /// The file offset of the probe's semaphore (the uprobe's reference counter); 0 when the
    /// probe has none.
    pub semaphore_offset: u64,
    /// The argument string of the note, as written.
    pub args_text: String,
    /// The arguments, translated.
    pub args: Vec<UsdtArg>,
}

impl UsdtSite {
    /// `struct __bpf_usdt_spec` for this site, with `usdt_cookie` 0.
    pub fn spec_bytes(&self) -> [u8; SPEC_SIZE] {
        let mut b = [0u8; SPEC_SIZE];
        for (i, arg) in self.args.iter().enumerate() {
            b[i * ARG_SPEC_SIZE..(i + 1) * ARG_SPEC_SIZE].copy_from_slice(&arg.spec_bytes());
        }
        let count = self.args.len() as i16;
        b[200..202].copy_from_slice(&count.to_le_bytes());
        b
    }
}

impl fmt::Display for UsdtSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} at {:#x}", self.provider, self.name, self.pc)
    }
}

/// The offset of an x86-64 register (any width: `rax`, `eax`, `ax`, `al`, `r8d`, `sil`...) in
/// the kernel's `struct pt_regs`, the context of a uprobe program.
pub fn pt_regs_offset(reg: &str) -> Option<i16> {
    // Kernel order: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss.
    const LEGACY: [(&str, [&str; 4], i16); 8] = [
        ("rax", ["rax", "eax", "ax", "al"], 80),
        ("rbx", ["rbx", "ebx", "bx", "bl"], 40),
        ("rcx", ["rcx", "ecx", "cx", "cl"], 88),
        ("rdx", ["rdx", "edx", "dx", "dl"], 96),
        ("rsi", ["rsi", "esi", "si", "sil"], 104),
        ("rdi", ["rdi", "edi", "di", "dil"], 112),
        ("rbp", ["rbp", "ebp", "bp", "bpl"], 32),
        ("rsp", ["rsp", "esp", "sp", "spl"], 152),
    ];
    if reg == "rip" {
        return Some(128);
    }
    for (_, names, off) in LEGACY {
        if names.contains(&reg) {
            return Some(off);
        }
    }
    // r8..r15 and their r8d, r8w, r8b forms.
    let n = reg.strip_prefix('r')?;
    let digits = n.trim_end_matches(['d', 'w', 'b']);
    if n.len() - digits.len() > 1 {
        return None;
    }
    let off = match digits {
        "8" => 72,
        "9" => 64,
        "10" => 56,
        "11" => 48,
        "12" => 24,
        "13" => 16,
        "14" => 8,
        "15" => 0,
        _ => return None,
    };
    Some(off)
}

/// Translates one argument of a note (`-4@%edi`, `8@-16(%rbp)`, `-4@$42`).
pub fn parse_arg(text: &str) -> Result<UsdtArg, &'static str> {
    let (size, location) = text
        .split_once('@')
        .ok_or("not of the form <size>@<location>")?;
    let (signed, size) = match size.strip_prefix('-') {
        Some(s) => (true, s),
        None => (false, size),
    };
    let size: u8 = match size {
        "1" => 1,
        "2" => 2,
        "4" => 4,
        "8" => 8,
        _ => return Err("the size is not 1, 2, 4 or 8"),
    };
    let reg = |r: &str| -> Result<i16, &'static str> {
        let name = r.strip_prefix('%').ok_or("a register must start with %")?;
        pt_regs_offset(name).ok_or("not an x86-64 general-purpose register")
    };
    let location = if let Some(imm) = location.strip_prefix('$') {
        ArgLocation::Const(parse_int(imm).ok_or("the constant is not a number")?)
    } else if location.starts_with('%') {
        ArgLocation::Reg(reg(location)?)
    } else if let Some((off, rest)) = location.split_once('(') {
        let inner = rest
            .strip_suffix(')')
            .ok_or("a memory operand must end with )")?;
        if inner.contains(',') {
            return Err("indexed memory operands are not supported (as in libbpf)");
        }
        let off = if off.is_empty() {
            0
        } else {
            parse_int(off).ok_or("the offset is not a number (a symbol offset is not supported)")?
        };
        if inner == "%rip" {
            return Err("%rip-relative operands are not supported (as in libbpf)");
        }
        ArgLocation::RegDeref(reg(inner)?, off)
    } else {
        return Err("not a register, constant or memory operand");
    };
    Ok(UsdtArg {
        size,
        signed,
        location,
    })
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()? as i64,
        None => digits.parse::<u64>().ok()? as i64,
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&self, at: u64, len: u64, what: &'static str) -> Result<&[u8], NotesError> {
        let end = at.checked_add(len).ok_or(NotesError::Malformed(what))?;
        self.0
            .get(at as usize..end as usize)
            .ok_or(NotesError::Malformed(what))
    }
    fn u16(&self, at: u64, what: &'static str) -> Result<u16, NotesError> {
        let b = self.bytes(at, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: u64, what: &'static str) -> Result<u32, NotesError> {
        let b = self.bytes(at, 4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&self, at: u64, what: &'static str) -> Result<u64, NotesError> {
        let b = self.bytes(at, 8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

struct Section {
    name: u32,
    addr: u64,
    offset: u64,
    size: u64,
    kind: u32,
}

/// Every USDT probe site of an ELF file, in note order.
pub fn parse(elf: &[u8]) -> Result<Vec<UsdtSite>, NotesError> {
    let r = Reader(elf);
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err(NotesError::NotElf("no ELF magic"));
    }
    if elf[4] != 2 || elf[5] != 1 {
        return Err(NotesError::NotElf("not ELF64 little-endian"));
    }
    if r.u16(18, "e_machine")? != 62 {
        return Err(NotesError::NotElf("e_machine is not EM_X86_64"));
    }
    let (phoff, shoff) = (r.u64(32, "e_phoff")?, r.u64(40, "e_shoff")?);
    let (phentsize, phnum) = (r.u16(54, "e_phentsize")?, r.u16(56, "e_phnum")?);
    let (shentsize, shnum) = (r.u16(58, "e_shentsize")?, r.u16(60, "e_shnum")?);
    let shstrndx = r.u16(62, "e_shstrndx")?;
    if (phnum > 0 && phentsize < 56) || (shnum > 0 && shentsize < 64) {
        return Err(NotesError::Malformed("header entry sizes"));
    }
    // PT_LOAD segments: (vaddr, offset, filesz).
    let mut loads = Vec::new();
    for i in 0..u64::from(phnum) {
        // Offsets from the file wrap instead of overflowing; `bytes` refuses what lands outside.
        let at = phoff.wrapping_add(i * u64::from(phentsize));
        if r.u32(at, "program header")? == 1 {
            loads.push((
                r.u64(at.wrapping_add(16), "p_vaddr")?,
                r.u64(at.wrapping_add(8), "p_offset")?,
                r.u64(at.wrapping_add(32), "p_filesz")?,
            ));
        }
    }
    let mut sections = Vec::new();
    for i in 0..u64::from(shnum) {
        let at = shoff.wrapping_add(i * u64::from(shentsize));
        sections.push(Section {
            name: r.u32(at, "section header")?,
            kind: r.u32(at.wrapping_add(4), "sh_type")?,
            addr: r.u64(at.wrapping_add(16), "sh_addr")?,
            offset: r.u64(at.wrapping_add(24), "sh_offset")?,
            size: r.u64(at.wrapping_add(32), "sh_size")?,
        });
    }
    let strtab = sections
        .get(usize::from(shstrndx))
        .ok_or(NotesError::Malformed("e_shstrndx"))?;
    let names = r.bytes(strtab.offset, strtab.size, "section names")?;
    let name_of = |s: &Section| -> &[u8] {
        let rest = names.get(s.name as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    let base_addr = sections
        .iter()
        .find(|s| name_of(s) == b".stapsdt.base")
        .map(|s| s.addr);
    let notes = sections
        .iter()
        .find(|s| name_of(s) == b".note.stapsdt" && s.kind == 7)
        .ok_or(NotesError::NoNotes)?;
    let data = r.bytes(notes.offset, notes.size, ".note.stapsdt")?;
    let file_offset = |addr: u64| {
        loads
            .iter()
            .find(|&&(vaddr, _, filesz)| addr >= vaddr && addr - vaddr < filesz)
            .map(|&(vaddr, off, _)| (addr - vaddr).wrapping_add(off))
    };

    let mut sites = Vec::new();
    let mut at = 0usize;
    let align4 = |n: usize| n.div_ceil(4) * 4;
    while at + 12 <= data.len() {
        let word = |i: usize| u32::from_le_bytes(data[at + i..at + i + 4].try_into().expect("4"));
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_at = at + 12;
        let desc_at = name_at
            .checked_add(align4(namesz))
            .ok_or(NotesError::Malformed("note name size"))?;
        let next = desc_at
            .checked_add(align4(descsz))
            .ok_or(NotesError::Malformed("note size"))?;
        let desc = data
            .get(desc_at..desc_at.saturating_add(descsz))
            .ok_or(NotesError::Malformed("a note runs past its section"))?;
        let owner = data
            .get(name_at..name_at.saturating_add(namesz))
            .unwrap_or_default();
        at = next;
        if kind != 3 || owner != b"stapsdt\0" {
            continue;
        }
        if desc.len() < 24 {
            return Err(NotesError::Malformed(
                "a stapsdt note shorter than its addresses",
            ));
        }
        let addr = |i: usize| u64::from_le_bytes(desc[i * 8..i * 8 + 8].try_into().expect("8"));
        let (mut pc, note_base, mut semaphore) = (addr(0), addr(1), addr(2));
        let mut strings = desc[24..].split(|&b| b == 0);
        let mut text = || String::from_utf8_lossy(strings.next().unwrap_or_default()).into_owned();
        let (provider, name, args_text) = (text(), text(), text());
        // Prelinked: the base moved by as much as the probes did.
        if let Some(base) = base_addr
            && note_base != 0
        {
            let delta = base.wrapping_sub(note_base);
            pc = pc.wrapping_add(delta);
            if semaphore != 0 {
                semaphore = semaphore.wrapping_add(delta);
            }
        }
        let offset = file_offset(pc)
            .ok_or_else(|| NotesError::Unmapped(provider.clone(), name.clone(), pc))?;
        let semaphore_offset = if semaphore == 0 {
            0
        } else {
            file_offset(semaphore)
                .ok_or_else(|| NotesError::Unmapped(provider.clone(), name.clone(), semaphore))?
        };
        let args = args_text
            .split_whitespace()
            .map(|a| {
                parse_arg(a).map_err(|why| {
                    NotesError::Argument(provider.clone(), name.clone(), a.to_owned(), why)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if args.len() > MAX_ARGS {
            return Err(NotesError::TooManyArgs(provider, name, args.len()));
        }
        sites.push(UsdtSite {
            provider,
            name,
            pc,
            offset,
            semaphore_offset,
            args_text,
            args,
        });
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    #[test]
    fn arguments_of_every_form() {
        let a = |s| parse_arg(s).unwrap();
        let reg = |r| ArgLocation::Reg(pt_regs_offset(r).unwrap());
        assert_eq!(
            a("-4@%edi"),
            UsdtArg {
                size: 4,
                signed: true,
                location: ArgLocation::Reg(112)
            }
        );
        assert_eq!(a("8@%rax").location, ArgLocation::Reg(80));
        assert_eq!(a("-2@%dx").location, reg("rdx"));
        assert_eq!(a("1@%sil").location, reg("rsi"));
        assert_eq!(a("-4@%r12d").location, ArgLocation::Reg(24));
        assert_eq!(a("8@%r15").location, ArgLocation::Reg(0));
        assert_eq!(a("-4@$42").location, ArgLocation::Const(42));
        assert_eq!(a("-2@$-1").location, ArgLocation::Const(-1));
        assert_eq!(a("8@$0x10").location, ArgLocation::Const(16));
        assert_eq!(a("-4@-20(%rbp)").location, ArgLocation::RegDeref(32, -20));
        assert_eq!(a("8@(%rax)").location, ArgLocation::RegDeref(80, 0));
        for bad in [
            "4%edi",
            "3@%edi",
            "4@%xmm0",
            "4@8(%rax,%rbx,8)",
            "4@sym+4(%rip)",
            "4@4(%rip)",
            "4@$x",
            "4@edi",
            "4@%r16",
            "4@%r8dd",
        ] {
            assert!(parse_arg(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn spec_layout_is_libbpfs() {
        let arg = parse_arg("-2@-16(%rbp)").unwrap();
        let b = arg.spec_bytes();
        assert_eq!(&b[0..8], &(-16i64).to_le_bytes());
        assert_eq!(&b[8..12], &2u32.to_le_bytes()); // BPF_USDT_ARG_REG_DEREF
        assert_eq!(&b[12..14], &32i16.to_le_bytes()); // offsetof(struct pt_regs, bp)
        assert_eq!(b[14], 1);
        assert_eq!(b[15], 48);
        let site = UsdtSite {
            provider: "p".into(),
            name: "n".into(),
            pc: 0,
            offset: 0,
            semaphore_offset: 0,
            args_text: String::new(),
            args: vec![arg, parse_arg("8@%rdi").unwrap()],
        };
        let s = site.spec_bytes();
        assert_eq!(&s[..16], &b);
        assert_eq!(s[16 + 15], 0);
        assert_eq!(&s[200..202], &2i16.to_le_bytes());
    }

    /// usdt_target and its library, compiled from the test sources with gcc.
    fn build(out: &Path) -> (PathBuf, PathBuf) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf");
        let lib = out.join("libbpfpin_usdt.so");
        let bin = out.join("usdt_target");
        let run = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("gcc").args(args).status().expect("gcc");
            assert!(status.success(), "gcc {args:?}");
        };
        run(&[
            "-O2".as_ref(),
            "-shared".as_ref(),
            "-fPIC".as_ref(),
            "-o".as_ref(),
            lib.as_os_str(),
            src.join("usdt_lib.c").as_os_str(),
        ]);
        run(&[
            "-O2".as_ref(),
            "-o".as_ref(),
            bin.as_os_str(),
            src.join("usdt_target.c").as_os_str(),
            src.join("usdt_guarded.c").as_os_str(),
            "-L".as_ref(),
            out.as_os_str(),
            "-lbpfpin_usdt".as_ref(),
        ]);
        (bin, lib)
    }

    /// `readelf -n`'s view of the notes: (provider, name, location, semaphore, arguments).
    fn readelf(path: &Path) -> Vec<(String, String, u64, u64, String)> {
        let out = Command::new("readelf")
            .arg("-n")
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut notes = Vec::new();
        let mut cur: Option<(String, String, u64, u64, String)> = None;
        let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap();
        for line in text.lines().map(str::trim) {
            if let Some(p) = line.strip_prefix("Provider: ") {
                cur = Some((p.into(), String::new(), 0, 0, String::new()));
            } else if let (Some(n), Some(c)) = (line.strip_prefix("Name: "), cur.as_mut()) {
                c.1 = n.into();
            } else if let (Some(l), Some(c)) = (line.strip_prefix("Location: "), cur.as_mut()) {
                let f: Vec<_> = l.split(", ").collect();
                c.2 = hex(f[0]);
                c.3 = hex(f[2].trim_start_matches("Semaphore: "));
            } else if let Some(a) = line.strip_prefix("Arguments: ") {
                let mut c = cur.take().unwrap();
                c.4 = a.into();
                notes.push(c);
            }
        }
        notes
    }

    #[test]
    fn the_notes_of_a_compiled_binary_and_library() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, lib) = build(dir.path());
        let sites = parse(&std::fs::read(&bin).unwrap()).unwrap();
        let expected = readelf(&bin);
        assert_eq!(sites.len(), 5, "{sites:#?}");
        assert_eq!(sites.len(), expected.len());
        for (s, (p, n, pc, sem, args)) in sites.iter().zip(&expected) {
            assert_eq!(
                (&s.provider, &s.name, s.pc, &s.args_text),
                (p, n, *pc, args)
            );
            assert_eq!(s.semaphore_offset != 0, *sem != 0, "{s}");
            assert_eq!(s.args.len(), args.split_whitespace().count());
        }
        let count = |n: &str| sites.iter().filter(|s| s.name == n).count();
        assert_eq!((count("args"), count("deref"), count("guarded")), (3, 1, 1));
        // The guarded probe's semaphore: a u16 in .probes, found through its data segment.
        let guarded = sites.iter().find(|s| s.name == "guarded").unwrap();
        assert_ne!(guarded.semaphore_offset, 0);
        // Built without optimisation, `deref` reads its arguments through the frame pointer.
        let deref = sites.iter().find(|s| s.name == "deref").unwrap();
        assert!(
            deref
                .args
                .iter()
                .all(|a| matches!(a.location, ArgLocation::RegDeref(32, _))),
            "{deref:?}"
        );
        // The site offset is where the probe's nop is: 0x90 in the file.
        let bytes = std::fs::read(&bin).unwrap();
        for s in &sites {
            assert_eq!(bytes[s.offset as usize], 0x90, "{s}: a nop at the site");
        }

        let lib_sites = parse(&std::fs::read(&lib).unwrap()).unwrap();
        assert_eq!(lib_sites.len(), 1);
        assert_eq!(
            (lib_sites[0].provider.as_str(), lib_sites[0].name.as_str()),
            ("bpfpinlib", "call")
        );
        assert_eq!(lib_sites[0].args.len(), 2);

        assert_eq!(
            parse(b"not an elf file at all, but long enough to hold a header; more bytes"),
            Err(NotesError::NotElf("no ELF magic"))
        );
        // An ELF without probes (this test binary itself has none).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(parse(&me), Err(NotesError::NoNotes));
        // Corrupted anywhere (headers, tables, notes): an error or other sites, never a panic.
        // The bytes that are read: the ELF and program headers, the section headers at the end,
        // and the notes (found by their owner string).
        let notes = bytes
            .windows(8)
            .position(|w| w == b"stapsdt\0")
            .expect("a stapsdt note")
            - 12;
        let regions = [(0, 0x400), (bytes.len() - 0x800, 0x800), (notes, 0x1a0)];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut errors = 0;
        for round in 0..6000 {
            let mut bad = bytes.clone();
            let (start, len) = regions[round % regions.len()];
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bad[start + (seed as usize) % len] = (seed >> 40) as u8;
            }
            errors += usize::from(parse(&bad).is_err());
        }
        assert!(errors > 100, "the corruptions are seen ({errors} errors)");
        // Truncated: the section headers are gone.
        assert!(matches!(
            parse(&bytes[..bytes.len() / 2]),
            Err(NotesError::Malformed(_))
        ));
    }
}

//! eBPF ELF objects crafted byte by byte for the hostile-input tests: thousands of programs (clang
//! takes minutes to build as many functions) and malformed symbol tables clang never writes.

/// `r0 = 2 (XDP_PASS); exit`.
const PROGRAM: [u8; 16] = [
    0xb7, 0, 0, 0, 2, 0, 0, 0, // mov64 r0, 2
    0x95, 0, 0, 0, 0, 0, 0, 0, // exit
];

/// An ELF relocatable for `EM_BPF` with `n` XDP programs `prog_0` .. `prog_{n-1}`, all in one
/// `xdp` section (as clang writes many `SEC("xdp")` functions), and a GPL license.
pub fn many_programs(n: usize) -> Vec<u8> {
    build(n, None)
}

/// Like [`many_programs`], but the last program's symbol claims `size` bytes: far past the end of
/// its section.
pub fn symbol_past_its_section(n: usize, size: u64) -> Vec<u8> {
    build(n, Some(size))
}

/// A section header's fields: (type, flags, data, link, info, align, entsize).
type Section<'a> = (u32, u64, &'a [u8], u32, u32, u64, u64);

fn build(n: usize, last_size: Option<u64>) -> Vec<u8> {
    let text: Vec<u8> = PROGRAM.iter().copied().cycle().take(16 * n).collect();
    let license = b"GPL\0".to_vec();
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24]; // the null symbol
    for i in 0..n {
        let name = u32::try_from(strtab.len()).expect("strtab offset");
        strtab.extend_from_slice(format!("prog_{i}\0").as_bytes());
        let size = match last_size {
            Some(s) if i == n - 1 => s,
            _ => 16,
        };
        symtab.extend_from_slice(&name.to_le_bytes());
        symtab.push(0x12); // STB_GLOBAL, STT_FUNC
        symtab.push(0);
        symtab.extend_from_slice(&1u16.to_le_bytes()); // section 1: xdp
        symtab.extend_from_slice(&(16 * i as u64).to_le_bytes());
        symtab.extend_from_slice(&size.to_le_bytes());
    }
    let names = ["", "xdp", "license", ".symtab", ".strtab", ".shstrtab"];
    let mut shstrtab = Vec::new();
    let mut name_off = Vec::new();
    for name in names {
        name_off.push(u32::try_from(shstrtab.len()).expect("offset"));
        shstrtab.extend_from_slice(name.as_bytes());
        shstrtab.push(0);
    }
    let sections: [Section<'_>; 5] = [
        (1, 0x6, &text, 0, 0, 8, 0),    // PROGBITS, ALLOC|EXECINSTR
        (1, 0x3, &license, 0, 0, 1, 0), // PROGBITS, WRITE|ALLOC
        (2, 0, &symtab, 4, 1, 8, 24),   // SYMTAB, strings in 4, first global 1
        (3, 0, &strtab, 0, 0, 1, 0),    // STRTAB
        (3, 0, &shstrtab, 0, 0, 1, 0),  // STRTAB (section names)
    ];
    let mut out = vec![0u8; 64];
    let mut headers = vec![0u8; 64]; // the null section header
    for (i, (kind, flags, data, link, info, align, entsize)) in sections.iter().enumerate() {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let offset = out.len() as u64;
        out.extend_from_slice(data);
        headers.extend_from_slice(&name_off[i + 1].to_le_bytes());
        headers.extend_from_slice(&kind.to_le_bytes());
        headers.extend_from_slice(&flags.to_le_bytes());
        headers.extend_from_slice(&0u64.to_le_bytes()); // addr
        headers.extend_from_slice(&offset.to_le_bytes());
        headers.extend_from_slice(&(data.len() as u64).to_le_bytes());
        headers.extend_from_slice(&link.to_le_bytes());
        headers.extend_from_slice(&info.to_le_bytes());
        headers.extend_from_slice(&align.to_le_bytes());
        headers.extend_from_slice(&entsize.to_le_bytes());
    }
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    out.extend_from_slice(&headers);
    let mut ehdr = Vec::with_capacity(64);
    ehdr.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // 64-bit, little endian
    ehdr.extend_from_slice(&[0; 8]);
    ehdr.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
    ehdr.extend_from_slice(&247u16.to_le_bytes()); // EM_BPF
    ehdr.extend_from_slice(&1u32.to_le_bytes()); // version
    ehdr.extend_from_slice(&0u64.to_le_bytes()); // entry
    ehdr.extend_from_slice(&0u64.to_le_bytes()); // phoff
    ehdr.extend_from_slice(&shoff.to_le_bytes());
    ehdr.extend_from_slice(&0u32.to_le_bytes()); // flags
    ehdr.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    ehdr.extend_from_slice(&0u16.to_le_bytes()); // phentsize
    ehdr.extend_from_slice(&0u16.to_le_bytes()); // phnum
    ehdr.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    ehdr.extend_from_slice(&6u16.to_le_bytes()); // shnum
    ehdr.extend_from_slice(&5u16.to_le_bytes()); // shstrndx
    out[..64].copy_from_slice(&ehdr);
    out
}

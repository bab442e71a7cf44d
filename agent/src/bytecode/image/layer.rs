//! The layer of a bytecode image: a tar, gzipped or not, holding one `*.o`. Nothing is written to
//! disk; what is decompressed and read is bounded.

use std::io::Read;

/// The most entries a layer may have (a bytecode image holds a few files).
pub const MAX_LAYER_ENTRIES: usize = 10_000;

/// The single `*.o` regular file of a layer (a tar, gzipped or not): its path and bytes.
pub fn extract_object(layer: &[u8], max_bytes: u64) -> Result<(String, Vec<u8>), String> {
    let reader: Box<dyn Read + '_> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else if layer.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err("its layer is zstd-compressed; push it as a tar or a gzipped tar".into());
    } else {
        Box::new(layer)
    };
    // A bound on what is decompressed, against gzip bombs.
    let mut archive = tar::Archive::new(reader.take(max_bytes.saturating_mul(4) + (1 << 20)));
    let entries = archive
        .entries()
        .map_err(|e| format!("its layer is not a tar archive: {e}"))?;
    let mut objects: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut found: Option<Vec<u8>> = None;
    let mut not_regular: Vec<String> = Vec::new();
    for (i, entry) in entries.enumerate() {
        if i >= MAX_LAYER_ENTRIES {
            return Err(format!(
                "its layer has more than {MAX_LAYER_ENTRIES} entries; a bytecode image holds a few files"
            ));
        }
        let mut entry = entry.map_err(|e| format!("its layer is not a valid tar archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("its layer has an invalid path: {e}"))?
            .to_string_lossy()
            .into_owned();
        // Nothing is written to disk, but a name that climbs out is no bytecode image.
        if path.starts_with('/') || path.split('/').any(|c| c == "..") {
            let shown: String = path.chars().take(200).collect();
            return Err(format!(
                "its layer has an entry with an unsafe path {shown:?}"
            ));
        }
        let path = path.trim_start_matches("./").to_owned();
        let file_name = path.rsplit('/').next().unwrap_or(&path);
        // Links, devices, FIFOs and directories hold no bytecode: only regular files count.
        let kind = entry.header().entry_type();
        if !kind.is_file() || file_name.starts_with(".wh.") {
            if path.ends_with(".o") && !kind.is_dir() && not_regular.len() < 10 {
                not_regular.push(format!(
                    "{} is a {kind:?}",
                    path.chars().take(200).collect::<String>()
                ));
            }
            continue;
        }
        if !path.ends_with(".o") {
            if others.len() < 10 {
                others.push(path.chars().take(200).collect());
            }
            continue;
        }
        if objects.len() >= 10 {
            continue;
        }
        objects.push(path);
        if objects.len() == 1 {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(max_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading {} from its layer: {e}", objects[0]))?;
            if bytes.len() as u64 > max_bytes {
                return Err(format!(
                    "{} is larger than the {} MiB limit for bytecode",
                    objects[0],
                    max_bytes >> 20
                ));
            }
            found = Some(bytes);
        }
    }
    match (objects.as_slice(), found) {
        ([one], Some(bytes)) => Ok((one.clone(), bytes)),
        ([], _) if !not_regular.is_empty() => Err(format!(
            "its layer has no regular *.o file ({}, not a regular file)",
            not_regular.join(", ")
        )),
        ([], _) => {
            let listed = if others.is_empty() {
                "it holds no file".to_owned()
            } else {
                format!("it holds {}", others.join(", "))
            };
            Err(format!("its layer has no *.o file ({listed})"))
        }
        (several, _) => Err(format!(
            "its layer has several *.o files ({}); a bytecode image holds one",
            several.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, *data)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip")
    }

    #[test]
    fn the_layer_must_hold_exactly_one_object() {
        let one = tar(&[("./bpf.o", b"elf"), ("README", b"hi")]);
        assert_eq!(
            extract_object(&one, 1 << 20),
            Ok(("bpf.o".into(), b"elf".to_vec()))
        );
        assert_eq!(
            extract_object(&gzip(&one), 1 << 20),
            Ok(("bpf.o".into(), b"elf".to_vec()))
        );
        let nested = tar(&[("opt/bytecode/prog.o", b"elf2")]);
        assert_eq!(
            extract_object(&gzip(&nested), 1 << 20),
            Ok(("opt/bytecode/prog.o".into(), b"elf2".to_vec()))
        );
        let none = tar(&[("README", b"hi")]);
        let err = extract_object(&none, 1 << 20).expect_err("none");
        assert!(
            err.contains("no *.o file") && err.contains("README"),
            "{err}"
        );
        let two = tar(&[("a.o", b"1"), ("b.o", b"2")]);
        let err = extract_object(&gzip(&two), 1 << 20).expect_err("two");
        assert!(err.contains("several *.o files (a.o, b.o)"), "{err}");
        let big = tar(&[("big.o", &[0u8; 2048])]);
        assert!(
            extract_object(&big, 1024)
                .expect_err("big")
                .contains("limit")
        );
        assert!(
            extract_object(b"\x28\xb5\x2f\xfdxxxx", 1024)
                .expect_err("zstd")
                .contains("zstd")
        );
        assert!(extract_object(&gzip(b"not a tar at all, no"), 1024).is_err());
    }
}

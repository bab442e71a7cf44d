//! `/proc/kallsyms`: which kernel functions exist (names are listed for every reader; addresses
//! only for privileged ones), for the ksyscall wrapper and the auto-attach check.

/// Whether `/proc/kallsyms` lists the text symbol `function`; `None` when it cannot be read.
pub fn has(function: &str) -> Option<bool> {
    use std::io::BufRead;
    let file = std::fs::File::open("/proc/kallsyms").ok()?;
    Some(
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .any(|line| {
                let mut fields = line.split_whitespace();
                let kind = fields.nth(1).unwrap_or_default();
                matches!(kind, "T" | "t") && fields.next() == Some(function)
            }),
    )
}

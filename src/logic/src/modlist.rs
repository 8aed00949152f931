//! Finding a module by name in the text of `/proc/modules`, read in pieces.
//!
//! Each line of `/proc/modules` starts with the module's name and a space (kernel/module
//! `m_show()`: `"%s %u"`, name and size), for every module past `MODULE_STATE_UNFORMED`:
//! `Loading` (COMING), `Live` and `Unloading` (GOING) alike. The file is read in chunks of
//! any size, so the scan keeps its place across them; it never allocates and accepts any
//! bytes.

/// A scan for lines that start with `name` followed by a space.
#[derive(Clone, Debug)]
pub struct ModuleScan<'n> {
    name: &'n [u8],
    /// At a line: how many bytes of `name` it started with so far; `None` once the line
    /// cannot match (skipping to its newline).
    matched: Option<usize>,
    found: bool,
}

impl<'n> ModuleScan<'n> {
    /// A scan for the module `name` (as the kernel spells it: `kvm_amd`, not `kvm-amd`).
    pub const fn new(name: &'n [u8]) -> Self {
        ModuleScan {
            name,
            matched: Some(0),
            found: false,
        }
    }

    /// Feeds the next piece of the file.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if self.found {
                return;
            }
            self.matched = match self.matched {
                _ if byte == b'\n' => Some(0),
                None => None,
                Some(at) if at == self.name.len() => {
                    self.found = byte == b' ';
                    None
                }
                Some(at) if self.name.get(at) == Some(&byte) => Some(at + 1),
                Some(_) => None,
            };
        }
    }

    /// Whether a line fed so far named the module.
    pub const fn found(&self) -> bool {
        self.found
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const PROC_MODULES: &[u8] = b"kvm_amd_extra 12 0 - Live 0x0\n\
        xkvm_amd 12 0 - Live 0x0\n\
        kvm_amd 155648 0 - Loading 0x0000000000000000\n\
        kvm 1142784 1 kvm_amd, Live 0x0000000000000000\n";

    fn scan(name: &[u8], text: &[u8]) -> bool {
        let mut scan = ModuleScan::new(name);
        scan.feed(text);
        scan.found()
    }

    #[test]
    fn finds_whole_names_at_line_starts_only() {
        assert!(scan(b"kvm_amd", PROC_MODULES));
        assert!(scan(b"kvm", PROC_MODULES));
        assert!(!scan(b"kvm_am", PROC_MODULES));
        assert!(!scan(b"amd", PROC_MODULES));
        assert!(!scan(b"kvm-amd", PROC_MODULES));
        // Named only as a user of another module, or as a prefix of a longer name.
        assert!(!scan(
            b"kvm_amd",
            b"kvm 1 1 kvm_amd, Live 0x0\nkvm_amd_extra 1 0 - Live 0x0\n"
        ));
        // A name with nothing after it is not a /proc/modules line.
        assert!(!scan(b"kvm_amd", b"kvm_amd\n"));
        assert!(!scan(b"kvm_amd", b""));
        // The first line, and the last without its newline.
        assert!(scan(b"kvm_amd", b"kvm_amd 1 0 - Live 0x0"));
        assert!(scan(b"kvm_amd", b"a 1\nkvm_amd "));
    }

    #[test]
    fn chunks_do_not_matter_here() {
        for split in 0..=PROC_MODULES.len() {
            let (head, tail) = PROC_MODULES.split_at(split);
            let mut scan = ModuleScan::new(b"kvm_amd");
            scan.feed(head);
            scan.feed(tail);
            assert!(scan.found(), "split at {split}");
        }
    }

    /// A line-based reading of the same rule, for the property tests.
    fn oracle(name: &[u8], text: &[u8]) -> bool {
        text.split(|&byte| byte == b'\n').any(|line| {
            line.len() > name.len() && line.starts_with(name) && line[name.len()] == b' '
        })
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_chunks_agree_with_the_oracle(
            text in proptest::collection::vec(
                prop_oneof![Just(b'k'), Just(b'v'), Just(b'm'), Just(b' '), Just(b'\n'), any::<u8>()],
                0..200,
            ),
            name in proptest::collection::vec(prop_oneof![Just(b'k'), Just(b'v'), Just(b'm')], 1..4),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(text.len())).collect();
            cuts.sort_unstable();
            let mut scan = ModuleScan::new(&name);
            let mut from = 0;
            for cut in cuts.into_iter().chain([text.len()]) {
                scan.feed(&text[from..cut]);
                from = cut;
            }
            prop_assert_eq!(scan.found(), oracle(&name, &text));
        }
    }
}

//! Which code took a bus lock: the function at a record's IP, read from the symbol table of
//! the file the module found mapped there.
//!
//! The module records the file's base name and the IP's offset into the file (`map=`). While
//! the process lives, its `/proc/<pid>/maps` has the mapping at the IP: its file is opened
//! through `/proc/<pid>/map_files/<start>-<end>` (the very file mapped, even deleted or in
//! another mount namespace), else by the path `maps` gives. The file offset becomes an
//! address through the ELF file's loadable segments, and the address a symbol through its
//! `.symtab`, else `.dynsym` (a stripped library still has the exported functions). Once the
//! process is gone, or if its mapping no longer matches the record, only the file and the
//! offset are shown.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use amd_sld_logic::record::{Event, Mapping};
use object::{Object, ObjectSegment, ObjectSymbol, ObjectSymbolTable, SymbolKind};

/// The functions of one ELF file and where its segments are loaded.
#[derive(Debug, Default)]
pub(crate) struct Symbols {
    /// `(address, size, name)` of each defined function, by address.
    functions: Vec<(u64, u64, String)>,
    /// `(file offset, file size, address)` of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
}

impl Symbols {
    /// Reads `data` as an object file (ELF); `None` if it is not one `object` can read.
    pub(crate) fn parse(data: &[u8]) -> Option<Symbols> {
        let file = object::File::parse(data).ok()?;
        let segments = file
            .segments()
            .filter_map(|segment| {
                let (offset, size) = segment.file_range();
                (size > 0).then_some((offset, size, segment.address()))
            })
            .collect();
        let table = file
            .symbol_table()
            .filter(|table| table.symbols().next().is_some())
            .or_else(|| file.dynamic_symbol_table())?;
        let mut functions: Vec<(u64, u64, String)> = table
            .symbols()
            .filter(|symbol| {
                symbol.kind() == SymbolKind::Text && symbol.is_definition() && symbol.address() != 0
            })
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                (!name.is_empty()).then(|| (symbol.address(), symbol.size(), name.to_owned()))
            })
            .collect();
        // By address; at one address, the global (non-underscore) name first.
        functions.sort_by_key(|f| (f.0, f.2.starts_with('_')));
        Some(Symbols {
            functions,
            segments,
        })
    }

    /// The address a file offset is loaded at.
    fn address_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(start, size, _)| offset >= start && offset - start < size)
            .map(|&(start, _, address)| address + (offset - start))
    }

    /// `function+0xNN` for a file offset, if a function covers it (or is the nearest below
    /// it, for a symbol without a size).
    pub(crate) fn name(&self, offset: u64) -> Option<String> {
        let address = self.address_of(offset)?;
        let index = self
            .functions
            .partition_point(|&(start, _, _)| start <= address)
            .checked_sub(1)?;
        // Symbols at the same address sort together: take the first of that address.
        let start = self.functions[index].0;
        let first = self.functions[..=index]
            .iter()
            .rposition(|&(other, _, _)| other != start)
            .map_or(0, |before| before + 1);
        let (start, size, name) = &self.functions[first];
        let within = address - start;
        (*size == 0 || within < *size).then(|| format!("{name}+{within:#x}"))
    }
}

/// One line of `/proc/<pid>/maps`: the range, the file offset and the path.
#[derive(Debug, PartialEq, Eq)]
struct MapsLine<'a> {
    start: u64,
    end: u64,
    offset: u64,
    path: &'a str,
}

fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    // start-end perms offset dev inode path (the path may hold spaces)
    let mut rest = line;
    let mut field = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (word, after) = trimmed.split_at(end);
        rest = after;
        word
    };
    let range = field();
    let _perms = field();
    let offset = field();
    let _dev = field();
    let _inode = field();
    let path = rest.trim_start();
    let (start, end) = range.split_once('-')?;
    Some(MapsLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
    })
}

/// Whether `path`'s base name is the record's (which the module cuts when long).
fn same_name(path: &str, mapping: &Mapping) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(" (deleted)").unwrap_or(base).as_bytes();
    let recorded = mapping.name_bytes();
    base == recorded || (mapping.name_may_be_cut() && base.starts_with(recorded))
}

/// Names the code of records, caching each file's symbols.
#[derive(Debug)]
pub(crate) struct Resolver {
    proc: PathBuf,
    files: HashMap<PathBuf, Option<Symbols>>,
}

impl Resolver {
    /// A resolver reading processes under `proc` (`/proc` on a host).
    pub(crate) fn new(proc: impl Into<PathBuf>) -> Resolver {
        Resolver {
            proc: proc.into(),
            files: HashMap::new(),
        }
    }

    /// The file of the live process `event.pid` mapped at `event.ip`, if it is the file
    /// and offset the record names.
    fn live_file(&self, event: &Event, mapping: &Mapping) -> Option<PathBuf> {
        let dir = self.proc.join(event.pid.to_string());
        let maps = fs::read_to_string(dir.join("maps")).ok()?;
        let line = maps
            .lines()
            .filter_map(parse_maps_line)
            .find(|line| line.start <= event.ip && event.ip < line.end)?;
        if !same_name(line.path, mapping) || line.offset + (event.ip - line.start) != mapping.offset
        {
            return None;
        }
        let by_range = dir
            .join("map_files")
            .join(format!("{:x}-{:x}", line.start, line.end));
        if fs::metadata(&by_range).is_ok() {
            Some(by_range)
        } else {
            Some(PathBuf::from(line.path))
        }
    }

    fn symbols(&mut self, path: &Path) -> Option<&Symbols> {
        self.files
            .entry(path.to_owned())
            .or_insert_with(|| fs::read(path).ok().and_then(|data| Symbols::parse(&data)))
            .as_ref()
    }

    /// `file function+0xNN`, or `file+0xOFFSET` where the function cannot be found (the
    /// process is gone, the file has no symbol there), or `None` for a record without a
    /// mapping.
    pub(crate) fn describe(&mut self, event: &Event) -> Option<String> {
        let mapping = event.map?;
        let name = String::from_utf8_lossy(mapping.name_bytes()).into_owned();
        let function = self
            .live_file(event, &mapping)
            .and_then(|path| self.symbols(&path)?.name(mapping.offset));
        Some(match function {
            Some(function) => format!("{name} {function}"),
            None => format!("{name}+{:#x}", mapping.offset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amd_sld_logic::record::{Action, Comm, Source};

    #[test]
    fn maps_lines() {
        assert_eq!(
            parse_maps_line(
                "7f12a000-7f12c000 r-xp 00028000 fe:01 1234    /usr/lib/x86_64-linux-gnu/libc.so.6"
            ),
            Some(MapsLine {
                start: 0x7f12_a000,
                end: 0x7f12_c000,
                offset: 0x28000,
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6"
            })
        );
        assert_eq!(
            parse_maps_line("1000-2000 rw-p 00000000 00:00 0 ").map(|l| l.path),
            Some("")
        );
        assert_eq!(
            parse_maps_line("1000-2000 r-xp 0 08:01 7 /tmp/a b (deleted)").map(|l| l.path),
            Some("/tmp/a b (deleted)")
        );
        assert_eq!(parse_maps_line("junk"), None);
    }

    #[test]
    fn names_match_whole_or_cut() {
        let short = Mapping::new(b"libc.so.6", 0).unwrap();
        assert!(same_name("/usr/lib/libc.so.6", &short));
        assert!(same_name("/usr/lib/libc.so.6 (deleted)", &short));
        assert!(!same_name("/usr/lib/libc.so.60", &short));
        let long = Mapping::new(&[b'x'; 40], 0).unwrap();
        assert!(same_name(&format!("/opt/{}", "x".repeat(45)), &long));
    }

    /// A function of this very test binary, to be found by its own symbol table.
    #[inline(never)]
    fn marker_function_for_symbols() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn names_a_function_of_a_live_process() {
        assert_eq!(marker_function_for_symbols(), 7);
        let ip = marker_function_for_symbols as *const () as u64 + 1;
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .filter_map(parse_maps_line)
            .find(|line| line.start <= ip && ip < line.end)
            .unwrap();
        let base = line.path.rsplit('/').next().unwrap();
        let offset = line.offset + (ip - line.start);
        let event = Event {
            seq: 0,
            ms: 0,
            cpu: 0,
            pid: std::process::id() as i32,
            tid: 0,
            comm: Comm::new(b"test"),
            source: Source::Bld,
            guest: false,
            ip,
            count: 1,
            action: Action::Warn,
            cgroup: 0,
            map: Mapping::new(base.as_bytes(), offset),
        };
        let mut resolver = Resolver::new("/proc");
        let text = resolver.describe(&event).unwrap();
        assert!(
            text.contains("marker_function_for_symbols") && text.ends_with("+0x1"),
            "{text}"
        );
        let name = String::from_utf8_lossy(event.map.unwrap().name_bytes()).into_owned();
        assert!(text.starts_with(&format!("{name} ")), "{text}");
        // Another offset than the live mapping has: the record is not about this file.
        let stale = Event {
            map: Mapping::new(base.as_bytes(), offset + 1),
            ..event
        };
        assert_eq!(
            resolver.describe(&stale),
            Some(format!("{name}+{:#x}", offset + 1))
        );
        // No such process: file and offset only.
        let gone = Event {
            pid: i32::MAX,
            ..event
        };
        assert_eq!(
            resolver.describe(&gone),
            Some(format!("{name}+{offset:#x}"))
        );
        assert_eq!(resolver.describe(&Event { map: None, ..event }), None);
    }

    #[test]
    fn not_an_object_file() {
        assert!(Symbols::parse(b"not an ELF file").is_none());
        assert_eq!(Symbols::default().name(0), None);
    }
}

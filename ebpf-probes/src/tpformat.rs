//! Record layouts of the classic tracepoints whose programs read fixed
//! C structs instead of CO-RE types (so that they load where ext4 or xfs
//! is a module, whose types aya 0.14 cannot relocate against): [`LAYOUTS`]
//! says which fields each program reads, and [`check`] compares them with
//! the running kernel's `<tracefs>/events/<category>/<name>/format` before
//! the program is attached. A mismatch is one line naming the field.

use std::{collections::HashMap, fs, path::Path};

/// One field a program reads: name, byte offset, size.
pub(crate) type Field = (&'static str, usize, usize);

const DEV: Field = ("dev", 8, 4);
const INO: Field = ("ino", 16, 8);

/// Program name -> the fields its C struct reads.
pub(crate) const LAYOUTS: &[(&str, &[Field])] = &[
    ("ovl_da_write_end", &[DEV, INO, ("copied", 36, 4)]),
    ("ovl_write_end", &[DEV, INO, ("copied", 36, 4)]),
    ("ovl_journalled_write_end", &[DEV, INO, ("copied", 36, 4)]),
    ("ovl_free_inode", &[DEV, INO, ("mode", 40, 2)]),
    (
        "ovl_hk_allocate_inode",
        &[DEV, INO, ("dir", 24, 8), ("mode", 32, 2)],
    ),
    ("ovl_tp_mark_inode_dirty", &[DEV, INO]),
    ("ovl_xfs_buffered_write", &[DEV, INO, ("count", 40, 8)]),
    ("ovl_xfs_remap", &[DEV, ("len", 48, 8), ("dest_ino", 56, 8)]),
    ("ovl_xfs_destroy_inode", &[DEV, INO]),
];

/// The fields `program` reads, when it reads a fixed layout.
pub(crate) fn layout_of(program: &str) -> Option<&'static [Field]> {
    LAYOUTS
        .iter()
        .find(|(name, _)| *name == program)
        .map(|(_, fields)| *fields)
}

/// Checks `fields` against the format file of `category:name` under
/// `tracefs`; `Err` says which field differs (or why it could not tell).
/// A tracepoint the kernel lacks passes: attaching it fails anyway.
pub(crate) fn check(
    tracefs: &Path,
    category: &str,
    name: &str,
    fields: &[Field],
) -> Result<(), String> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        // No such tracepoint: the attach says so in the loader's words.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    compare(&parse(&text), fields)
        .map_err(|e| format!("{category}:{name} record differs from the program's: {e}"))
}

fn compare(found: &HashMap<String, (usize, usize)>, fields: &[Field]) -> Result<(), String> {
    for &(field, offset, size) in fields {
        match found.get(field) {
            Some(&(o, s)) if (o, s) == (offset, size) => {}
            Some(&(o, s)) => {
                return Err(format!(
                    "field {field} at offset {o} size {s}, expected offset {offset} size {size}"
                ));
            }
            None => return Err(format!("no field {field}")),
        }
    }
    Ok(())
}

/// `field:<type> <name>;\toffset:<n>;\tsize:<n>;...` lines -> name ->
/// (offset, size).
fn parse(text: &str) -> HashMap<String, (usize, usize)> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut parts = line.trim().split(';').map(str::trim);
        let Some(decl) = parts.next().and_then(|d| d.strip_prefix("field:")) else {
            continue;
        };
        let Some(name) = decl
            .split_whitespace()
            .last()
            .map(|n| n.split('[').next().unwrap_or(n))
        else {
            continue;
        };
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        if let (Some(o), Some(s)) = (offset, size) {
            out.insert(name.to_owned(), (o, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE_END: &str = "name: ext4_da_write_end
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:ino_t ino;\toffset:16;\tsize:8;\tsigned:0;
\tfield:loff_t pos;\toffset:24;\tsize:8;\tsigned:1;
\tfield:unsigned int len;\toffset:32;\tsize:4;\tsigned:0;
\tfield:unsigned int copied;\toffset:36;\tsize:4;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:40;\tsize:4;\tsigned:0;

print fmt: \"dev %d:%d\"
";

    #[test]
    fn parses_a_format_and_compares_layouts() {
        let found = parse(WRITE_END);
        assert_eq!(found["copied"], (36, 4));
        assert_eq!(found["name"], (40, 4));
        let layout = layout_of("ovl_da_write_end").expect("layout");
        assert_eq!(compare(&found, layout), Ok(()));
        let err = compare(&found, &[("copied", 32, 4)]).expect_err("moved");
        assert!(err.contains("field copied at offset 36"), "{err}");
        assert!(compare(&found, &[("mode", 40, 2)]).is_err());
    }

    #[test]
    fn every_classic_fixed_layout_program_matches_this_kernel() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: tracefs unavailable: not root");
            return;
        }
        let tracefs = crate::tracefs::ensure_tracefs().expect("tracefs");
        for (program, category, name) in [
            ("ovl_da_write_end", "ext4", "ext4_da_write_end"),
            ("ovl_free_inode", "ext4", "ext4_free_inode"),
            ("ovl_hk_allocate_inode", "ext4", "ext4_allocate_inode"),
            ("ovl_tp_mark_inode_dirty", "ext4", "ext4_mark_inode_dirty"),
            ("ovl_xfs_buffered_write", "xfs", "xfs_file_buffered_write"),
            ("ovl_xfs_remap", "xfs", "xfs_reflink_remap_range"),
            ("ovl_xfs_destroy_inode", "xfs", "xfs_destroy_inode"),
        ] {
            let format = tracefs.join("events").join(category).join(name);
            if !format.exists() {
                println!("skipped: {category}:{name} unavailable: not in this kernel");
                continue;
            }
            let layout = layout_of(program).expect("layout");
            assert_eq!(check(&tracefs, category, name, layout), Ok(()), "{program}");
        }
    }
}

//! `layerscope docker inspect [--docker-root DIR]`: a read-only look at a
//! real Docker data root through `storage_core::docker_root`. JSON by
//! default (as `docker inspect`), aligned tables for people.

use std::io::Write;
use std::path::Path;

use storage_core::docker_root::{self, DockerRoot};

/// Prints what the Docker data root at `docker_root` holds: as pretty JSON
/// when `json` is true, else as tables (images with their layers, then
/// containers with their sizes). Problems found while reading go to stderr
/// in table mode and into the `problems` array in JSON.
pub fn inspect(docker_root: &Path, json: bool) -> anyhow::Result<()> {
    // The error already names the path and the cause on one line.
    let view = docker_root::read(docker_root).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = if json {
        let mut text = serde_json::to_string_pretty(&view)?;
        text.push('\n');
        text
    } else {
        for problem in &view.problems {
            eprintln!("warning: {problem}");
        }
        render_tables(&view)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `| head` closed the pipe: not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Rows padded to the widest cell of each column, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(ToString::to_string).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn render_tables(view: &DockerRoot) -> String {
    let mut out = format!(
        "DOCKER ROOT {}  DRIVER {}\n\n",
        view.root.display(),
        view.driver
    );
    let mut image_rows = Vec::new();
    for image in &view.images {
        let name = if image.tags.is_empty() {
            "<none>".to_string()
        } else {
            image.tags.join(",")
        };
        image_rows.push(vec![
            short(&image.id).to_string(),
            name,
            image.layers.len().to_string(),
            or_dash(image.size),
        ]);
    }
    out.push_str(&table(&["IMAGE ID", "TAGS", "LAYERS", "SIZE"], &image_rows));
    out.push('\n');

    let mut layer_rows = Vec::new();
    for layer in &view.layers {
        layer_rows.push(vec![
            short(&layer.chain_id).to_string(),
            short(&layer.diff_id).to_string(),
            layer.parent.as_deref().map_or("-", short).to_string(),
            short(&layer.cache_id).to_string(),
            layer.size.to_string(),
            if layer.chain_id_verified {
                "ok"
            } else {
                "MISMATCH"
            }
            .to_string(),
        ]);
    }
    out.push_str(&table(
        &["CHAIN ID", "DIFF ID", "PARENT", "CACHE ID", "SIZE", "CHAIN"],
        &layer_rows,
    ));
    out.push('\n');

    let mut container_rows = Vec::new();
    for container in &view.containers {
        container_rows.push(vec![
            short(&container.id).to_string(),
            container.name.clone(),
            container
                .image_ref
                .clone()
                .unwrap_or_else(|| short(&container.image).to_string()),
            if container.running {
                "running"
            } else {
                "stopped"
            }
            .to_string(),
            or_dash(container.mount_id.as_deref().map(short)),
            or_dash(container.size_rw),
            or_dash(container.size_root_fs),
        ]);
    }
    out.push_str(&table(
        &[
            "CONTAINER ID",
            "NAME",
            "IMAGE",
            "STATE",
            "MOUNT ID",
            "SIZE RW",
            "SIZE ROOTFS",
        ],
        &container_rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(text, "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn short_ids_drop_the_algorithm() {
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}

//! `wkctl snapshot save|status|restore`: backup and restore, etcd's model.
//!
//! The file format is `wk_api::snapshot`. `save` streams `GET /cluster/snapshot` of one node
//! into a file and checks it; `status` checks a file and prints what it holds; `restore` is
//! an offline operation on LMDB files, which only `wknode` may touch, so it runs
//! `wknode --restore` (found like `wkctl demo` finds it) and passes its output and exit code on.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use wk_api::snapshot::{SnapshotStatus, verify};

use crate::Outcome;
use crate::cli::{GlobalArgs, OutputFormat, RestoreArgs};
use crate::output;

/// A save may take long on a big node; `--timeout` still bounds it if set higher.
const SAVE_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn save(global: &GlobalArgs, file: &Path) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let part = PathBuf::from(format!("{}.part", file.display()));
    let written = async {
        let mut out =
            BufWriter::new(File::create(&part).with_context(|| format!("create {}", part.display()))?);
        let bytes = client
            .snapshot_to(&mut out, global.timeout.max(SAVE_TIMEOUT))
            .await
            .context("GET /cluster/snapshot")?;
        out.flush().with_context(|| format!("write {}", part.display()))?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("sync {}", part.display()))?;
        let status = check(&part)?;
        anyhow::ensure!(
            status.bytes == bytes,
            "received {bytes} bytes but the snapshot ends after {}",
            status.bytes
        );
        std::fs::rename(&part, file).with_context(|| format!("rename to {}", file.display()))?;
        Ok::<_, anyhow::Error>(status)
    }
    .await;
    let status = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_json(&mut out, &status)?,
        OutputFormat::Text => output::write_text(
            &mut out,
            &format!("saved {}\n{}", file.display(), status_text(&status)),
        )?,
    }
    Ok(Outcome::Ok)
}

pub fn status(global: &GlobalArgs, file: &Path) -> anyhow::Result<Outcome> {
    let status = check(file)?;
    output::print(global.output, &status, || status_text(&status))?;
    Ok(Outcome::Ok)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<Outcome> {
    let bin = crate::local::find_wknode(args.wknode.as_deref())?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--restore")
        .arg(&args.file)
        .arg("--data-dir")
        .arg(&args.data_dir);
    if let Some(id) = args.node_id {
        cmd.arg("--node-id").arg(id.to_string());
    }
    let status = cmd.status().with_context(|| format!("run {}", bin.display()))?;
    if !status.success() {
        // wknode printed why on stderr.
        bail!(
            "restore refused ({} --restore exited with {status})",
            bin.display()
        );
    }
    Ok(Outcome::Ok)
}

/// Verify a whole file: framing, counts and checksum.
fn check(file: &Path) -> anyhow::Result<SnapshotStatus> {
    let f = File::open(file).with_context(|| format!("open {}", file.display()))?;
    verify(BufReader::new(f)).with_context(|| format!("{} is refused", file.display()))
}

/// The header and counts, one `key: value` per line.
pub fn status_text(s: &SnapshotStatus) -> String {
    let h = &s.header;
    let created = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(h.created_unix_ms));
    let mut text = format!(
        "node:        {}\ncluster:     {}\ncreated:     {created}\nversion:     {} (data format {})\n\
         size:        {} bytes\nchecksum:    {} (xxh3, verified)\nrows:        {}\n",
        h.node_id,
        if h.cluster_id.is_empty() {
            "-"
        } else {
            &h.cluster_id
        },
        h.version,
        h.data_format,
        s.bytes,
        s.checksum,
        s.trailer.rows,
    );
    for (table, n) in &s.trailer.tables {
        text.push_str(&format!("  {:<10} {n}\n", format!("{table}:")));
    }
    text
}

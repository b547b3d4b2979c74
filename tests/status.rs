//! `filebus status`: what a person sees of a live bus, and the same as JSON
//! for scripts; it must take no lock and change nothing.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Status section of docs/guide.md, and the JSON document field for field
//! against docs/status-json.md, read by serde_json and by Python's `json`,
//! with paths that are not UTF-8 and hold control characters.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Spawn;
use common::procs::on_bus;
use common::{Scratch, ours, wait_until};
use filebus::{BusPaths, Status};

fn status(bus: &std::path::Path, extra: &[&str]) -> String {
    let out = on_bus(ours(), bus, &[], "status", extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every entry of the bus's directory, with size and modification time.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn an_empty_path_is_reported_as_no_bus_yet() {
    let s = Scratch::new();
    let text = status(&s.bus(), &[]);
    assert!(text.contains("data     none"), "{text}");
    assert!(text.contains("lock     no lock file yet"), "{text}");
    assert!(text.contains("history  none"), "{text}");
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 0);
}

#[test]
fn a_live_bus_shows_its_chunk_lock_holder_history_and_lag() {
    let s = Scratch::new();
    let bus = s.bus();
    // A history producer that keeps running (its input stays open) holds
    // nothing between chunks; a lossless consumer with nothing to take
    // doesn't either, so the lock is taken here by a process we control.
    let mut producer = on_bus(ours(), &bus, &[], "producer", &["--retain", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn_proc()
        .unwrap();
    let mut input = producer.stdin.take().unwrap();
    for i in 0..8 {
        input.write_all(format!("chunk {i}\n").as_bytes()).unwrap();
        input.flush().unwrap();
        let entry = bus.with_extension("history").join(format!("{:020}", i + 1));
        wait_until(&format!("chunk {i} in the history"), || entry.exists());
    }
    let position = s.path("pos");
    std::fs::write(&position, "6\n").unwrap();
    let missing = s.path("never");

    // Hold the lock as a producer would, from a child process.
    let lock_path = format!("{}.lock", bus.display());
    let mut holder = Command::new("flock")
        .args([&lock_path, "-c", "read line"])
        .stdin(Stdio::piped())
        .spawn_group()
        .expect("flock(1) from util-linux");
    wait_in_proc_locks(holder.id(), "the lock taken by flock(1)");

    let before = snapshot(s.dir.path());
    let text = status(
        &bus,
        &[
            "--position-file",
            position.to_str().unwrap(),
            "--position-file",
            missing.to_str().unwrap(),
        ],
    );
    println!("{text}");
    assert!(text.contains("data     8 bytes, written "), "{text}");
    assert!(
        text.contains(&format!("lock     held by PID {}", holder.id())),
        "{text}"
    );
    assert!(text.contains("flock"), "the holder's command: {text}");
    assert!(text.contains("staging  clean"), "{text}");
    assert!(text.contains("history  chunks 4-8 retained (5)"), "{text}");
    assert!(text.contains("delivered 6, 2 chunks behind"), "{text}");
    assert!(text.contains("never: not written yet"), "{text}");

    let json = status(
        &bus,
        &["--json", "--position-file", position.to_str().unwrap()],
    );
    println!("{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["data"]["size"], 8, "{json}");
    assert_eq!(doc["lock"]["holder"]["pid"], holder.id(), "{json}");
    assert_eq!(
        doc["history"],
        serde_json::json!({"oldest": 4, "newest": 8}),
        "{json}"
    );
    assert_eq!(doc["positions"][0]["delivered"], 6, "{json}");
    assert_eq!(doc["positions"][0]["lag"], 2, "{json}");
    assert_eq!(before, snapshot(s.dir.path()), "status changed the bus");

    drop(holder.stdin.take());
    common::wait_exit(&mut holder, "flock(1)");
    drop(input);
    common::assert_success(&mut producer, "producer");
}

#[test]
fn a_stale_staging_file_is_named() {
    let s = Scratch::new();
    let bus = s.bus();
    std::fs::write(format!("{}.__new__", bus.display()), b"half a chu").unwrap();
    std::fs::write(format!("{}.lock", bus.display()), b"").unwrap();
    let text = status(&bus, &[]);
    assert!(
        text.contains("staging  leftover") && text.contains("(10 bytes,"),
        "{text}"
    );
    assert!(text.contains("lock     free"), "{text}");
}

/// `status --json` on `bus`, reporting the lag of each of `positions`: the
/// raw output.
fn status_json(bus: &Path, positions: &[&Path]) -> Vec<u8> {
    let mut cmd = on_bus(ours(), bus, &[], "status", &["--json"]);
    for position in positions {
        cmd.arg("--position-file").arg(position);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "status --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A path as docs/status-json.md says to read it back: `<key>_hex` when not
/// null, else `<key>` as UTF-8.
fn path_of(object: &serde_json::Value, key: &str) -> Vec<u8> {
    match object.get(format!("{key}_hex")).and_then(|v| v.as_str()) {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect(),
        None => object[key].as_str().unwrap().as_bytes().to_vec(),
    }
}

#[test]
fn a_path_with_bytes_not_utf8_and_control_characters_round_trips() {
    let s = Scratch::new();
    // Latin-1 é (not UTF-8), a control character, a tab, a newline, a quote
    // and a backslash.
    let dir = s
        .dir
        .path()
        .join(OsStr::from_bytes(b"caf\xe9 \x01\t\n\"\\"));
    std::fs::create_dir(&dir).unwrap();
    let bus = dir.join("bus");
    let position = dir.join(OsStr::from_bytes(b"pos\xff"));
    std::fs::write(&position, "1\n").unwrap();
    let json = status_json(&bus, &[&position]);
    let doc: serde_json::Value = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&json)));
    assert_eq!(path_of(&doc, "path"), bus.as_os_str().as_bytes(), "{doc}");
    assert_eq!(
        path_of(&doc["positions"][0], "path"),
        position.as_os_str().as_bytes(),
        "{doc}"
    );
}

/// The fields docs/status-json.md lists, by dotted name (`positions[].lag`),
/// with the JSON types each may have (`integer or null`: two).
fn documented_fields() -> BTreeMap<String, Vec<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-json.md"))
            .unwrap();
    assert!(
        doc.contains(&format!(
            "This page describes version {}.",
            Status::SCHEMA_VERSION
        )),
        "docs/status-json.md describes another version than {}",
        Status::SCHEMA_VERSION
    );
    let fields: BTreeMap<String, Vec<String>> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|row| {
            let (name, rest) = row
                .split_once("` | ")
                .unwrap_or_else(|| panic!("bad row {row}"));
            let types = rest.split(" | ").next().unwrap();
            (
                name.to_string(),
                types.split(" or ").map(String::from).collect(),
            )
        })
        .collect();
    assert!(
        fields.len() > 20,
        "the table of fields not found: {fields:?}"
    );
    fields
}

/// The JSON type of a value, as docs/status-json.md names them.
fn type_of(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `value` with its type, named as docs/status-json.md names
/// them, once for each occurrence.
fn fields_of(value: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (key, value) in object {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        out.push((name.clone(), type_of(value).to_string()));
        match value {
            serde_json::Value::Array(items) => {
                for item in items {
                    fields_of(item, &format!("{name}[]"), out);
                }
            }
            _ => fields_of(value, &name, out),
        }
    }
}

/// What Python's `json` module reads in a document: its fields as
/// [`fields_of`] names them, and the exact path of the bus and of each
/// position file in hexadecimal, decoded as docs/status-json.md shows.
const PYTHON_READER: &str = r#"
import json, sys
doc = json.loads(sys.stdin.buffer.read())
def kind(v):
    if v is None: return "null"
    if isinstance(v, bool): return "boolean"
    if isinstance(v, int): return "integer"
    if isinstance(v, float): return "number"
    if isinstance(v, str): return "string"
    return "array" if isinstance(v, list) else "object"
fields = []
def walk(obj, prefix):
    for key, value in obj.items():
        name = prefix + "." + key if prefix else key
        fields.append([name, kind(value)])
        if isinstance(value, dict):
            walk(value, name)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    walk(item, name + "[]")
walk(doc, "")
def path_bytes(obj):
    if obj["path_hex"] is not None:
        return bytes.fromhex(obj["path_hex"])
    return obj["path"].encode()
paths = [path_bytes(doc)] + [path_bytes(p) for p in doc["positions"]]
print(json.dumps({"fields": sorted(fields), "paths": [p.hex() for p in paths]}))
"#;

/// `status --json` on `bus` read by serde_json and by Python's `json`,
/// checked against docs/status-json.md: every field documented with one of
/// its types, the same fields and paths in both readers, the paths exact.
/// Adds the fields seen to `seen`.
fn checked_status(
    bus: &Path,
    positions: &[&Path],
    seen: &mut BTreeSet<String>,
) -> serde_json::Value {
    let raw = status_json(bus, positions);
    let text = String::from_utf8(raw.clone()).expect("the document is UTF-8");
    println!("{text}");
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
    let doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("serde_json: {e}: {text}"));
    assert_eq!(doc["version"], Status::SCHEMA_VERSION, "{text}");

    let documented = documented_fields();
    let mut fields = Vec::new();
    fields_of(&doc, "", &mut fields);
    for (name, ty) in &fields {
        let types = documented
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in docs/status-json.md: {text}"));
        assert!(
            types.contains(ty),
            "{name} is {ty}, documented as {types:?}: {text}"
        );
        // Every field of an object present is present, null or not.
        let parent = name.rsplit_once('.').map_or("", |(parent, _)| parent);
        for sibling in documented.keys() {
            if sibling.rsplit_once('.').map_or("", |(p, _)| p) == parent {
                assert!(
                    fields.iter().any(|(n, _)| n == sibling),
                    "{sibling} is missing: {text}"
                );
            }
        }
        seen.insert(name.clone());
    }
    fields.sort();

    let mut python = Command::new("python3")
        .args(["-c", PYTHON_READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn_proc()
        .expect("python3, which the tests need");
    python.stdin.take().unwrap().write_all(&raw).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "Python's json could not read {text}");
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let python_fields: Vec<(String, String)> =
        serde_json::from_value(read["fields"].clone()).unwrap();
    assert_eq!(python_fields, fields, "Python reads other fields");
    let hex = |p: &Path| -> String {
        p.as_os_str()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let expected: Vec<String> = std::iter::once(bus)
        .chain(positions.iter().copied())
        .map(hex)
        .collect();
    let python_paths: Vec<String> = serde_json::from_value(read["paths"].clone()).unwrap();
    assert_eq!(python_paths, expected, "Python reads other paths: {text}");
    doc
}

/// Waits until `/proc/locks` names the process `pid`: it holds a lock or
/// waits for one.
fn wait_in_proc_locks(pid: u32, what: &str) {
    wait_until(what, || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(" {pid} ")))
    });
}

#[test]
fn the_json_document_is_the_documented_schema_field_for_field() {
    let s = Scratch::new();
    // Every path below is not UTF-8 and holds control characters.
    let dir = s
        .dir
        .path()
        .join(OsStr::from_bytes(b"st\xe9\x1b[1m\n\t\"\\"));
    std::fs::create_dir(&dir).unwrap();
    let mut seen = BTreeSet::new();

    // A lossless producer waiting for its first chunk to be consumed, the
    // lock held by one process and waited for by another.
    let lossless = dir.join("lossless");
    let mut producer = on_bus(ours(), &lossless, &["--back-pressure"], "producer", &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn_proc()
        .unwrap();
    let mut input = producer.stdin.take().unwrap();
    input.write_all(b"first\n").unwrap();
    wait_until("the first chunk published", || lossless.exists());
    input.write_all(b"second\n").unwrap();
    let lock = BusPaths::new(&lossless).lock().to_path_buf();
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["-c", "read line"])
        .stdin(Stdio::piped())
        .spawn_group()
        .expect("flock(1) from util-linux");
    wait_in_proc_locks(holder.id(), "the lock taken by flock(1)");
    let mut waiter = Command::new("flock")
        .arg(&lock)
        .arg("true")
        .spawn_proc()
        .unwrap();
    // Named there only once blocked, as the lock is held.
    wait_in_proc_locks(waiter.id(), "a second flock(1) waiting");
    let doc = checked_status(&lossless, &[], &mut seen);
    assert_eq!(doc["data"]["size"], 6, "{doc}");
    assert_eq!(doc["lock"]["state"], "held", "{doc}");
    assert_eq!(doc["lock"]["holder"]["pid"], holder.id(), "{doc}");
    assert_eq!(doc["lock"]["waiting"], 1, "{doc}");
    assert!(doc["path_hex"].is_string(), "{doc}");
    assert!(
        doc["history"].is_null() && doc["staging"].is_null(),
        "{doc}"
    );
    drop(holder.stdin.take());
    common::wait_exit(&mut holder, "flock(1) holding");
    common::wait_exit(&mut waiter, "flock(1) waiting");
    drop(input);
    let drained = on_bus(ours(), &lossless, &["--back-pressure"], "consumer", &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(drained.status.success());
    assert_eq!(drained.stdout, b"first\nsecond\n");
    common::assert_success(&mut producer, "lossless producer");

    // A history producer, a running subscriber caught up, one whose process
    // is gone and that lost chunks, a position file behind and one not
    // written yet.
    let history = dir.join("history");
    let mut producer = on_bus(
        ours(),
        &history,
        &[],
        "producer",
        &["--retain", "5", "--untether-after", "0"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn_proc()
    .unwrap();
    let mut input = producer.stdin.take().unwrap();
    let paths = BusPaths::new(&history);
    for i in 0..8 {
        input.write_all(format!("chunk {i}\n").as_bytes()).unwrap();
        let entry = paths.history().join(format!("{:020}", i + 1));
        wait_until(&format!("chunk {i} in the history"), || entry.exists());
    }
    let mut live = on_bus(
        ours(),
        &history,
        &[],
        "consumer",
        &["--history", "--subscribe", "live", "--from", "newest"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn_proc()
    .unwrap();
    let records = paths.history().join("subscribers");
    wait_until("the subscriber's record at 8", || {
        std::fs::read_to_string(records.join("live")).is_ok_and(|r| r.trim() == "8")
    });
    std::fs::write(records.join("gone"), "2\n").unwrap();
    let position = dir.join(OsStr::from_bytes(b"pos\xff\x7f"));
    std::fs::write(&position, "6\n").unwrap();
    let never = dir.join("never");
    let doc = checked_status(&history, &[&position, &never], &mut seen);
    assert_eq!(
        doc["history"],
        serde_json::json!({"oldest": 4, "newest": 8})
    );
    assert_eq!(doc["positions"][0]["delivered"], 6, "{doc}");
    assert_eq!(doc["positions"][0]["lag"], 2, "{doc}");
    assert!(doc["positions"][1]["delivered"].is_null(), "{doc}");
    assert!(doc["positions"][1]["lag"].is_null(), "{doc}");
    let subscribers = serde_json::json!([
        {"name": "gone", "delivered": 2, "lag": 6, "pid": null, "untethered": true,
         "error": null},
        {"name": "live", "delivered": 8, "lag": 0, "pid": live.id(), "untethered": false,
         "error": null},
    ]);
    assert_eq!(doc["subscribers"], subscribers, "{doc}");
    drop(input);
    common::assert_success(&mut producer, "history producer");
    common::assert_success(&mut live, "subscriber");

    // What a producer killed mid-publish leaves, beside a free lock.
    let stale = dir.join("stale");
    std::fs::write(BusPaths::new(&stale).staging(), b"half a chu").unwrap();
    std::fs::write(BusPaths::new(&stale).lock(), b"").unwrap();
    let doc = checked_status(&stale, &[], &mut seen);
    assert_eq!(doc["staging"]["size"], 10, "{doc}");
    assert_eq!(doc["lock"]["state"], "free", "{doc}");
    assert!(
        doc["lock"]["holder"].is_null() && doc["data"].is_null(),
        "{doc}"
    );

    let unseen: Vec<_> = documented_fields()
        .into_keys()
        .filter(|name| !seen.contains(name))
        .collect();
    assert!(
        unseen.is_empty(),
        "documented but never printed: {unseen:?}"
    );
}

#[test]
fn a_position_file_that_holds_no_number_is_named_whatever_it_holds() {
    let s = Scratch::new();
    let not_utf8 = s.path("latin1");
    std::fs::write(&not_utf8, b"\xe9\n").unwrap();
    // A device that never ends: read whole, it would take all the memory
    // there is; the address space is limited so that such a read fails soon.
    for position in [not_utf8.as_path(), Path::new("/dev/zero")] {
        let filebus = ours();
        let out = Command::new("sh")
            .args(["-c", "ulimit -v 400000 && exec \"$@\"", "sh"])
            .arg(filebus.get_program())
            .arg("--filename")
            .arg(s.bus())
            .args(["status", "--position-file"])
            .arg(position)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            err,
            format!(
                "filebus: {} does not hold a chunk sequence number\n",
                position.display()
            )
        );
    }
}

/// `F` that is no chunk (what a consumer refuses) is named for what it is,
/// not as a chunk of its size or an end marker: without opening it (a FIFO
/// would block) and without following a link (it could lead to one). It is
/// a state of the bus, described with status 0 as a stale staging file is.
#[test]
fn a_data_file_that_is_not_a_regular_file_is_named_for_what_it_is() {
    let s = Scratch::new();
    let directory = s.path("directory");
    std::fs::create_dir(&directory).unwrap();
    let fifo = s.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let link = s.path("link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let socket = s.path("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let cases = [
        (
            directory.as_path(),
            "directory",
            "producers and consumers refuse the bus until it is removed",
        ),
        (
            &fifo,
            "FIFO",
            "consumers refuse it until a producer replaces it",
        ),
        (
            &link,
            "symbolic link",
            "consumers refuse it until a producer replaces it",
        ),
        (
            &socket,
            "socket",
            "consumers refuse it until a producer replaces it",
        ),
        (
            Path::new("/dev/zero"),
            "device",
            "consumers refuse it until a producer replaces it",
        ),
    ];
    for (bus, kind, then) in cases {
        let text = status(bus, &[]);
        assert!(
            text.contains(&format!(
                "\ndata     a {kind}, not a regular file: {then}\n"
            )),
            "{}: {text}",
            bus.display()
        );
        let doc: serde_json::Value = serde_json::from_str(&status(bus, &["--json"])).unwrap();
        assert_eq!(doc["data"]["kind"], kind, "{doc}");
    }
    // A staging file that is no staged chunk either.
    let stale = s.path("stale");
    std::fs::create_dir(BusPaths::new(&stale).staging()).unwrap();
    let text = status(&stale, &[]);
    assert!(
        text.contains(&format!(
            "\nstaging  {}.__new__ is a directory, not a regular file: \
             producers cannot publish until it is removed\n",
            stale.display()
        )),
        "{text}"
    );
    let regular = s.bus();
    std::fs::write(&regular, b"chunk").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&status(&regular, &["--json"])).unwrap();
    assert_eq!(doc["data"]["kind"], "regular file", "{doc}");
    assert!(status(&regular, &[]).contains("\ndata     5 bytes, written "));
}

/// `status` on `bus` with `extra`, its output kept in files of `s` and
/// waited for with a deadline (a FIFO opened blocking would hang it): exit
/// code, standard output, standard error.
fn status_exit(s: &Scratch, bus: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let (out, err) = (s.path("status.out"), s.path("status.err"));
    let mut child = on_bus(ours(), bus, &[], "status", extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn_proc()
        .unwrap();
    let code = common::wait_exit(&mut child, "status").code();
    let read = |p: &Path| String::from_utf8(std::fs::read(p).unwrap()).unwrap();
    (code, read(&out), read(&err))
}

/// A bus whose producer kept chunks 2-4 (three lines and the end marker,
/// `--retain 3`).
fn bus_with_history(s: &Scratch) -> std::path::PathBuf {
    let bus = s.bus();
    let input = s.path("input");
    std::fs::write(&input, "1\n2\n3\n").unwrap();
    let mut producer = on_bus(
        ours(),
        &bus,
        &["--lines", "--block-size", "2"],
        "producer",
        &["--retain", "3"],
    )
    .stdin(std::fs::File::open(&input).unwrap())
    .spawn_proc()
    .unwrap();
    common::assert_success(&mut producer, "history producer");
    bus
}

/// One subscriber's record or one position file that holds no number (or
/// is no file to read one from) is flagged on its own line, with the
/// reason; everything else is still described, and the exit status, 1,
/// says that something could not be read, each reason one line on
/// standard error. A FIFO is not opened blocking.
#[test]
fn an_unreadable_entry_is_flagged_on_its_line_and_the_rest_still_described() {
    let s = Scratch::new();
    let bus = bus_with_history(&s);
    let records = BusPaths::new(&bus).history().join("subscribers");
    std::fs::create_dir(&records).unwrap();
    std::fs::write(records.join("real"), "4\n").unwrap();
    std::fs::write(records.join("empty"), "").unwrap();
    std::fs::write(records.join("bad"), "garbage\n").unwrap();
    let good = s.path("good.pos");
    std::fs::write(&good, "3\n").unwrap();
    let empty = s.path("empty.pos");
    std::fs::write(&empty, "").unwrap();
    let garbage = s.path("garbage.pos");
    std::fs::write(&garbage, "garbage\n").unwrap();
    let fifo = s.path("fifo.pos");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let directory = s.path("directory.pos");
    std::fs::create_dir(&directory).unwrap();
    let mut args = Vec::new();
    for p in [&good, &empty, &garbage, &fifo, &directory] {
        args.push("--position-file");
        args.push(p.to_str().unwrap());
    }
    let no_number = |p: &Path| format!("{} does not hold a chunk sequence number", p.display());
    let bad_positions = [
        (&empty, no_number(&empty)),
        (&garbage, no_number(&garbage)),
        (&fifo, no_number(&fifo)),
        (
            &directory,
            format!(
                "cannot read {}: Is a directory (os error 21)",
                directory.display()
            ),
        ),
    ];
    let bad_records = [
        ("bad", no_number(&records.join("bad"))),
        ("empty", no_number(&records.join("empty"))),
    ];

    let (code, text, err) = status_exit(&s, &bus, &args);
    assert_eq!(code, Some(1), "{text}{err}");
    for line in [
        "history  chunks 2-4 retained (3)".to_string(),
        format!("position {}: delivered 3, 1 chunk behind", good.display()),
        "subscriber real: delivered 4, 0 chunks behind, not running".to_string(),
    ] {
        assert!(text.contains(&format!("{line}\n")), "{line}: {text}");
    }
    for (path, reason) in &bad_positions {
        let line = format!("position {}: not read: {reason}\n", path.display());
        assert!(text.contains(&line), "{line}: {text}");
    }
    for (name, reason) in &bad_records {
        let line = format!("subscriber {name}: not read: {reason}, not running\n");
        assert!(text.contains(&line), "{line}: {text}");
    }
    let mut expected: Vec<String> = bad_positions
        .iter()
        .map(|(_, reason)| format!("filebus: {reason}"))
        .chain(bad_records.iter().map(|(_, r)| format!("filebus: {r}")))
        .collect();
    expected.sort();
    let mut lines: Vec<String> = err.lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, expected, "{err}");

    let (code, json, json_err) = status_exit(&s, &bus, &[&["--json"], &args[..]].concat());
    assert_eq!(code, Some(1), "{json}{json_err}");
    assert_eq!(json_err, err);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        doc["history"],
        serde_json::json!({"oldest": 2, "newest": 4})
    );
    assert_eq!(doc["positions"][0]["delivered"], 3, "{doc}");
    assert!(doc["positions"][0]["error"].is_null(), "{doc}");
    for (k, (_, reason)) in bad_positions.iter().enumerate() {
        let position = &doc["positions"][k + 1];
        assert_eq!(position["error"], reason.as_str(), "{doc}");
        assert!(
            position["delivered"].is_null() && position["lag"].is_null(),
            "{doc}"
        );
    }
    let error_of = |name: &str| {
        doc["subscribers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|sub| sub["name"] == name)
            .unwrap_or_else(|| panic!("no subscriber {name}: {doc}"))
            .clone()
    };
    assert_eq!(
        error_of("real"),
        serde_json::json!({"name": "real", "delivered": 4, "lag": 0, "pid": null,
                           "untethered": false, "error": null})
    );
    for (name, reason) in &bad_records {
        let sub = error_of(name);
        assert_eq!(sub["error"], reason.as_str(), "{doc}");
        assert!(sub["delivered"].is_null() && sub["lag"].is_null(), "{doc}");
    }
}

/// Only regular files named as entries are retained chunks: a directory
/// made under an entry's name far ahead does not stretch the range.
#[test]
fn an_entry_that_is_not_a_regular_file_is_no_retained_chunk() {
    let s = Scratch::new();
    let bus = bus_with_history(&s);
    let history = BusPaths::new(&bus).history().to_path_buf();
    std::fs::create_dir(history.join(format!("{:020}", 99))).unwrap();
    nix::unistd::mkfifo(
        &history.join(format!("{:020}", 1)),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let (code, text, err) = status_exit(&s, &bus, &[]);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{text}");
    assert!(
        text.contains("\nhistory  chunks 2-4 retained (3)\n"),
        "{text}"
    );
    let (code, json, err) = status_exit(&s, &bus, &["--json"]);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        doc["history"],
        serde_json::json!({"oldest": 2, "newest": 4})
    );
}

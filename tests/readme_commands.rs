//! The README's quick-start commands, run as a new user would, but from a folder other than the repository: the
//! commands are read from README.md itself (the `sh` blocks of "## Quick start"), `cargo run --release --` and
//! `adaptir` become this build's binary, and the repository's own paths (`models/...`, `fixtures/...`) become
//! absolute. Every command must exit 0 and write its output into the working folder. The test command itself
//! (`bash scripts/test.sh`) is this test's caller and is skipped.
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The commands of the quick start's `sh` blocks, as argument lists for the binary.
fn quick_start_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme.find("## Quick start").expect("README has a Quick start section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map(|i| i + 3).unwrap_or(section.len());
    let section = &section[..end];
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = t == "```sh" && !in_block;
            continue;
        }
        if !in_block || t.is_empty() || t.starts_with('#') {
            continue;
        }
        let rest = if let Some(r) = t.strip_prefix("cargo run --release -- ") {
            r
        } else if let Some(r) = t.strip_prefix("adaptir ") {
            r
        } else {
            continue; // bash scripts/test.sh: the command that runs this test
        };
        let args = rest
            .split_whitespace()
            .map(|a| {
                if a.starts_with("models/") || a.starts_with("fixtures/") {
                    repo().join(a).to_string_lossy().into_owned()
                } else {
                    a.to_string()
                }
            })
            .collect();
        commands.push(args);
    }
    commands
}

#[test]
fn the_quick_start_commands_work_from_another_folder() {
    let commands = quick_start_commands();
    assert!(commands.len() >= 3, "expected the export, validate and restore examples, found {commands:?}");
    let cwd = std::env::temp_dir().join(format!("adaptir-readme-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    for args in &commands {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_adaptir")).args(args).current_dir(&cwd).output().unwrap();
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert_eq!(out.status.code(), Some(0), "adaptir {}\n{o}\n{e}", args.join(" "));
        eprintln!("adaptir {}: ok", args.join(" "));
    }
    // What they wrote landed in the working folder, not in the repository.
    for written in ["derain.onnx", "chelsea.png"] {
        assert!(cwd.join(written).is_file(), "{written} not written into {}", cwd.display());
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

/// The README's training examples (`adaptir train ... --backbone models/ipt-tiny/backbone.safetensors --out
/// T.safetensors`) are the settings of the shipped adapter `models/ipt-tiny/T.safetensors`: its metadata records
/// the same data folders, exclusions or pairs, steps, batch, learning rate and seed (issue 14: they had drifted apart).
#[test]
fn the_readme_training_examples_are_the_shipped_adapters_settings() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    // Shell lines joined across trailing backslashes.
    let joined = readme.replace("\\\n", " ");
    let examples: Vec<Vec<&str>> = joined
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|a| a.starts_with(&["adaptir", "train"]) && a.contains(&"models/ipt-tiny/backbone.safetensors"))
        .collect();
    assert!(examples.len() >= 2, "expected the derain and realnoise examples, found {examples:?}");
    for args in examples {
        let value = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
        let out = value("--out").expect("an --out");
        let shipped = repo().join("models/ipt-tiny").join(out);
        let meta = adaptir::peft::file::AdapterFile::load(&shipped).unwrap_or_else(|e| panic!("{out}: {e}")).meta;
        let t = &meta.training;
        let line = args.join(" ");
        assert_eq!(value("--task"), Some(meta.task.as_str()), "{line}");
        assert_eq!(value("--method"), Some(meta.method.as_str()), "{line}");
        // Every value of a repeatable flag, in order.
        let values = |flag: &str| -> Vec<&str> { args.windows(2).filter(|w| w[0] == flag).map(|w| w[1]).collect() };
        match values("--data").as_slice() {
            [] => {}
            [one] => assert_eq!(t["data"], *one, "{line}"),
            many => assert_eq!(t["data"], serde_json::json!(many), "{line}"),
        }
        let exclude = values("--exclude");
        if exclude.is_empty() {
            assert!(t.get("exclude").is_none(), "{line}");
        } else {
            assert_eq!(t["exclude"], serde_json::json!(exclude), "{line}");
        }
        if let Some(p) = value("--pairs") {
            assert_eq!(t["pairs"], p, "{line}");
        }
        for (flag, key) in [("--steps", "steps"), ("--batch", "batch"), ("--seed", "seed")] {
            assert_eq!(value(flag).map(|v| v.parse::<u64>().unwrap()), t[key].as_u64(), "{flag} in {line}");
        }
        assert_eq!(value("--lr").map(|v| v.parse::<f64>().unwrap()), t["lr"].as_f64(), "--lr in {line}");
    }
}

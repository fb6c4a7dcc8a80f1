//! `docs/configuration.md` documents exactly the variables the daemon accepts.

use std::collections::BTreeSet;

use tikban::config::all_vars;

fn documented() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn configuration_doc_matches_accepted_variables() {
    let docs = documented();
    let code: BTreeSet<String> = all_vars().map(|v| v.name.to_owned()).collect();
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "accepted but not in docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "in docs/configuration.md but not accepted: {unknown:?}"
    );
}

#[test]
fn documented_defaults_match_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    for v in all_vars() {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", v.name)))
            .unwrap();
        let default_cell = row.split('|').nth(2).unwrap().trim();
        match v.default {
            Some(d) => assert_eq!(default_cell, format!("`{d}`"), "{}", v.name),
            None => assert!(
                !default_cell.starts_with('`'),
                "{} documents a default the code lacks",
                v.name
            ),
        }
    }
}

#[test]
fn operations_doc_lists_every_metric_and_its_labels() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
    let text = std::fs::read_to_string(path).unwrap();
    for fam in tikban::metrics::FAMILIES {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", fam.name)))
            .unwrap_or_else(|| panic!("{} missing from docs/operations.md", fam.name));
        for label in fam.labels {
            assert!(
                row.contains(&format!("`{label}`")),
                "{}: label {label} undocumented",
                fam.name
            );
        }
    }
}

//! The router-side files, checked against what each RouterOS release they claim actually has.
//!
//! - Every command in `routeros-scripts/*.rsc` (and in the code of their `:parse` strings): its
//!   menu path, its argument names, the properties named in `where` conditions and by `get`,
//!   against the command tree of every supported release (`tests/data/routeros-schema/`, dumped
//!   by `/console/inspect` with the extra packages). The scripts switch on the running release
//!   with `:if ($rosVer >= 720) do={…} else={…}` (`$rosVer` is major × 100 + minor); each branch
//!   is checked only against the releases that take it.
//! - `tikban-remove.rsc` must still run when the container package is already gone.
//! - The README's quick-start commands, against the releases they are for.
//! - `tikban.tikapp.yaml` and `tikban.tikappstore.yaml` against the `/app` JSON Schemas of 7.22.3,
//!   7.23.3 and 7.24 (validated by Python's `jsonschema`; see `validate_yaml`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// Every release the scripts are checked against, oldest first.
const RELEASES: [&str; 10] = [
    "7.15.3", "7.16.2", "7.17.1", "7.18.2", "7.19.6", "7.20.8", "7.21.5", "7.22.3", "7.23.3",
    "7.24",
];

/// The scripts and the oldest release each supports (each supports every newer one listed above).
/// `/app/add yaml=` exists from 7.22 (`tests/data/routeros-schema/README.md`).
const SCRIPTS: [(&str, &str); 3] = [
    ("tikban-setup.rsc", "7.15.3"),
    ("tikban-remove.rsc", "7.15.3"),
    ("tikban-app-prep.rsc", "7.22.3"),
];

/// Properties that menus print but no `add` or `set` takes, so the command tree does not list
/// them: only the ones the scripts and the README read. Each holds wherever its menu exists.
const READ_ONLY: [(&str, &[&str]); 6] = [
    // Flag D of firewall rules; dynamic rules (e.g. the fasttrack counter) cannot be moved
    // above (docs/reference/routeros-api.md §10).
    ("ip/firewall/filter", &["dynamic"]),
    ("ip/firewall/raw", &["dynamic"]),
    ("ipv6/firewall/raw", &["dynamic"]),
    // Log lines: `/log/print where topics~"container"` (docs/reference/routeros-containers.md §3).
    ("log", &["topics"]),
    // `/system/resource/print`: the running release, e.g. `7.20.8 (stable)`.
    ("system/resource", &["version"]),
    // Every `/app/print` record has a name (tests/data/routeros-schema/
    // routeros-7.24-builtin-apps.json.gz); it comes from the YAML, so `/app/set` does not take it.
    ("app", &["name"]),
];

/// Arguments of `add`/`set` that are not properties of an item.
const NOT_PROPERTIES: [&str; 4] = ["numbers", "number", "copy-from", "place-before"];

// ==== the tests =================================================================================

#[test]
fn scripts_use_only_what_every_release_they_support_has() {
    let scripts: BTreeSet<String> = std::fs::read_dir(repo("routeros-scripts"))
        .expect("routeros-scripts/")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".rsc"))
        .collect();
    let listed: BTreeSet<String> = SCRIPTS.iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(
        scripts, listed,
        "every script in routeros-scripts/ needs a line in SCRIPTS"
    );

    let mut report = String::new();
    for (script, oldest) in SCRIPTS {
        let mut c = Checker::new(releases());
        let set = c.from(oldest);
        c.check_file(&format!("routeros-scripts/{script}"), set);
        report.push_str(&c.report(|_| true));
        // A parser that silently skipped the file would pass: demand that it read the commands.
        let (commands, parsed) = match script {
            "tikban-setup.rsc" => (40, 4),
            "tikban-remove.rsc" => (20, 4),
            _ => (15, 0),
        };
        assert!(
            c.commands >= commands && c.parsed >= parsed,
            "{script}: checked only {} menu commands and {} :parse strings",
            c.commands,
            c.parsed
        );
    }
    assert!(report.is_empty(), "\n{report}");
}

/// `/container`, and from 7.21 `/interface/veth`, come with the container package; removing the
/// package removes the menus (`tests/data/routeros-schema/README.md`), and a command naming a
/// missing menu fails the whole imported block. The remove script must still clean up the rest:
/// its commands for those menus may only sit in `:parse` strings inside `:do {…} on-error=`.
#[test]
fn remove_script_runs_without_the_container_package() {
    let pruned: Vec<Release> = releases()
        .iter()
        .map(|r| {
            let mut tree = r.tree.clone();
            let root = tree.as_object_mut().unwrap();
            root.remove("container");
            root.remove("app");
            if r.number >= 721 {
                root["interface"].as_object_mut().unwrap().remove("veth");
            }
            Release { tree, ..*r }
        })
        .collect();
    let mut c = Checker::new(&pruned);
    let all = c.from(RELEASES[0]);
    c.check_file("routeros-scripts/tikban-remove.rsc", all);

    let unguarded = c.report(|f| !f.guarded);
    assert!(unguarded.is_empty(), "\n{unguarded}");
    // And the isolated commands are really there: without the package they fail, caught.
    let guarded = c.report(|f| f.guarded);
    for menu in ["/container", "/interface/veth"] {
        assert!(
            guarded.contains(&format!(": no menu or command {menu}\n")),
            "expected the guarded {menu} commands to fail without the package:\n{guarded}"
        );
    }
}

/// The checker itself: the fixture has one line per kind of mistake, plus lines that are right
/// only thanks to a version branch. It must report exactly the mistakes, with the releases
/// that lack what the line uses.
#[test]
fn checker_reports_exactly_what_a_release_lacks() {
    let mut c = Checker::new(releases());
    let all = c.from(RELEASES[0]);
    c.check_file("tests/data/rsc/lacks.rsc", all);
    let got: Vec<(usize, String, String)> = c
        .findings
        .iter()
        .map(|f| (f.line, f.releases.join(" "), f.message.clone()))
        .collect();
    let from_720 = "7.20.8 7.21.5 7.22.3 7.23.3 7.24";
    let before_719 = "7.15.3 7.16.2 7.17.1 7.18.2";
    let expected = [
        (5, from_720, "/container/add has no argument `envlist`"),
        (
            18,
            before_719,
            "/log/print has no argument `with-extra-info`",
        ),
        (
            20,
            &RELEASES.join(" "),
            "/ip/firewall/filter has no property `running`",
        ),
        (
            22,
            &RELEASES.join(" "),
            "`list=$list`: a variable named like the property always matches (name it differently)",
        ),
        (
            24,
            &RELEASES.join(" "),
            "no menu or command /interface/wireguard/peers/foo",
        ),
    ];
    let expected: Vec<(usize, String, String)> = expected
        .iter()
        .map(|(l, r, m)| (*l, r.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, expected, "\n{}", c.report(|_| true));
}

/// Code blocks of the README's "Quick start on a router" section are checked like the scripts;
/// a block whose first line is `# RouterOS 7.22+` only against 7.22 and later.
#[test]
fn readme_quick_start_commands_exist_in_their_releases() {
    let readme = read(&repo("README.md"));
    let start = readme
        .find("## Quick start on a router")
        .expect("README section \"Quick start on a router\"");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 3 + e);
    let mut c = Checker::new(releases());
    let mut blocks = 0;
    let mut lines = readme[..start].lines().count();
    let mut block: Option<(usize, String)> = None;
    for line in readme[start..end].lines() {
        lines += 1;
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```routeros") => block = Some((lines + 1, String::new())),
            (Some((first, code)), l) if l.starts_with("```") => {
                let from = code
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("# RouterOS "));
                let set = match from.and_then(|f| f.split_once('+')) {
                    Some((oldest, _)) => c.from(&format!("{oldest}.0")),
                    None => c.from(RELEASES[0]),
                };
                c.check_source("README.md", code, *first, &Ctx::new(set));
                blocks += 1;
                block = None;
            }
            (Some((_, code)), l) => {
                code.push_str(l);
                code.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        blocks >= 4,
        "found only {blocks} routeros blocks in the quick start"
    );
    let report = c.report(|_| true);
    assert!(report.is_empty(), "\n{report}");
}

#[test]
fn app_yaml_files_pass_the_app_schemas_of_7_22_to_7_24() {
    let app = read(&repo("routeros-scripts/tikban.tikapp.yaml"));
    let store = read(&repo("routeros-scripts/tikban.tikappstore.yaml"));
    // A copy that the schemas must reject: proves the validator really runs on our files.
    let broken = app.replace("category: security", "category: firewall");
    assert_ne!(
        broken, app,
        "tikban.tikapp.yaml has no `category: security` line"
    );
    for release in ["7.22.3", "7.23.3", "7.24"] {
        let results = validate_yaml(
            release,
            &[
                ("app", "tikban.tikapp.yaml", &app),
                ("store", "tikban.tikappstore.yaml", &store),
                ("app", "broken copy", &broken),
            ],
        );
        assert_eq!(
            results[0].1,
            Vec::<String>::new(),
            "{release}: tikban.tikapp.yaml"
        );
        assert_eq!(
            results[1].1,
            Vec::<String>::new(),
            "{release}: tikban.tikappstore.yaml"
        );
        assert!(
            results[2]
                .1
                .iter()
                .any(|e| e.contains("'firewall' is not one of")),
            "{release}: the schema did not reject an unknown category: {:?}",
            results[2].1
        );
    }
}

/// What MikroTik ships must pass its own schema: the validator and the YAML loader read the files
/// the way the schema's authors meant.
#[test]
fn every_builtin_app_of_7_24_passes_the_7_24_schema() {
    let mut gz = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(data("routeros-schema/routeros-7.24-builtin-apps.json.gz")).unwrap(),
    )
    .read_to_end(&mut gz)
    .unwrap();
    let apps: Vec<Value> = serde_json::from_slice(&gz).unwrap();
    assert_eq!(apps.len(), 108);
    let docs: Vec<(&str, &str, &str)> = apps
        .iter()
        .map(|a| {
            (
                "app",
                a["name"].as_str().unwrap(),
                a["yaml"].as_str().unwrap(),
            )
        })
        .collect();
    let failed: Vec<_> = validate_yaml("7.24", &docs)
        .into_iter()
        .zip(&docs)
        .filter(|((_, errors), _)| !errors.is_empty())
        .map(|((_, errors), (_, name, _))| format!("{name}: {errors:?}"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The app runs the image the release pipeline pushes, configured the way the daemon reads it.
#[test]
fn app_definition_runs_this_release_of_tikban() {
    let app_text = read(&repo("routeros-scripts/tikban.tikapp.yaml"));
    let store_text = read(&repo("routeros-scripts/tikban.tikappstore.yaml"));
    let results = validate_yaml(
        "7.24",
        &[
            ("app", "tikban.tikapp.yaml", &app_text),
            ("store", "tikban.tikappstore.yaml", &store_text),
        ],
    );
    let (app, store) = (&results[0].0, &results[1].0);
    assert_eq!(
        store,
        &json!([app]),
        "the store must list exactly the app of tikban.tikapp.yaml"
    );

    assert_eq!(app["name"], "tikban");
    assert_eq!(app["category"], "security");
    assert!(
        app.get("volumes").is_none(),
        "tikban writes no files: no volumes"
    );
    let services = app["services"].as_object().unwrap();
    assert_eq!(services.len(), 1, "one service");
    let svc = &services["tikban"];
    assert_eq!(
        svc["image"],
        format!("ghcr.io/tikban/tikban:{}", env!("CARGO_PKG_VERSION")),
        "the image of this workspace version"
    );
    assert!(svc.get("volumes").is_none(), "tikban writes no files");

    let env = svc["environment"].as_object().unwrap();
    for name in env.keys() {
        assert!(
            tikban::config::VARS.iter().any(|v| v.name == name),
            "the app sets {name}, which the daemon does not read"
        );
    }
    for required in ["CROWDSEC_URL", "CROWDSEC_BOUNCER_API_KEY", "MIKROTIK_PASS"] {
        assert_eq!(
            env.get(required),
            Some(&json!("")),
            "{required}: an empty value for the owner to fill in"
        );
    }
    // /app replaces [routerIP] with the router's address as the container reaches it (the
    // built-in mikrodash app reaches the router API the same way).
    assert_eq!(env["MIKROTIK_HOST"], "[routerIP]:8728");

    // The image is `scratch` with only /tikban in it (docs/packaging.md "The image tar"): the
    // health check can run nothing else, no shell, no wget.
    let test = svc["healthcheck"]["test"]
        .as_array()
        .expect("healthcheck.test");
    assert_eq!(test[0], "CMD", "exec form: there is no shell in the image");
    assert_eq!(test[1], "/tikban", "the only program in the image");
}

/// `tikban-app-prep.rsc` prepares the router for exactly the app's settings.
#[test]
fn app_prep_parameters_match_the_app() {
    let app_text = read(&repo("routeros-scripts/tikban.tikapp.yaml"));
    let results = validate_yaml("7.24", &[("app", "tikban.tikapp.yaml", &app_text)]);
    let env = &results[0].0["services"]["tikban"]["environment"];
    let prep = read(&repo("routeros-scripts/tikban-app-prep.rsc"));
    let local = |name: &str| -> String {
        let prefix = format!(":local {name} ");
        let line = prep
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("tikban-app-prep.rsc has no `:local {name}`"));
        line.trim().trim_matches('"').to_string()
    };
    assert_eq!(env["MIKROTIK_USER"], local("apiUser"));
    assert_eq!(
        env["MIKROTIK_HOST"],
        format!("[routerIP]:{}", local("apiPort"))
    );
    assert_eq!(env["FIREWALL_IPV4_ADDRESS_LIST"], local("listV4"));
    assert_eq!(env["FIREWALL_IPV6_ADDRESS_LIST"], local("listV6"));
}

// ==== releases ==================================================================================

/// One release: its name, major × 100 + minor (what the scripts' `$rosVer` holds) and its tree.
struct Release {
    name: &'static str,
    number: u32,
    tree: Value,
}

fn releases() -> &'static [Release] {
    static LOADED: OnceLock<Vec<Release>> = OnceLock::new();
    LOADED.get_or_init(|| {
        // About 1.2 MB of JSON each: read them in parallel.
        std::thread::scope(|s| {
            let loading: Vec<_> = RELEASES
                .iter()
                .map(|&name| s.spawn(move || load(name)))
                .collect();
            loading.into_iter().map(|h| h.join().unwrap()).collect()
        })
    })
}

fn load(name: &'static str) -> Release {
    let path = data(&format!(
        "routeros-schema/routeros-{name}-extra-inspect.json.gz"
    ));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut json)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tree = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Release {
        name,
        number: release_number(name),
        tree,
    }
}

/// `7.20.8` → 720.
fn release_number(name: &str) -> u32 {
    let mut parts = name.split('.').map(|p| p.parse::<u32>().unwrap());
    parts.next().unwrap() * 100 + parts.next().unwrap()
}

/// A child menu, command or argument of a tree node.
fn child<'t>(node: &'t Value, name: &str) -> Option<&'t Value> {
    node.get(name).filter(|v| v.is_object())
}

fn kind(node: &Value) -> &str {
    node["_type"].as_str().unwrap_or("")
}

/// A menu: `dir`, or `path` (a menu that only holds menus, such as `/ip`).
fn is_menu(node: &Value) -> bool {
    matches!(kind(node), "dir" | "path")
}

fn has_arg(cmd: &Value, name: &str) -> bool {
    child(cmd, name).is_some_and(|a| kind(a) == "arg")
}

fn at<'t>(tree: &'t Value, path: &[String]) -> Option<&'t Value> {
    path.iter().try_fold(tree, |node, seg| child(node, seg))
}

/// What items of a menu have: the arguments of its `add` and `set`, and the read-only ones.
fn properties(tree: &Value, menu: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = [".id".to_string()].into();
    if let Some(node) = at(tree, menu) {
        for cmd in ["add", "set"].iter().filter_map(|c| child(node, c)) {
            let args = cmd.as_object().unwrap().iter();
            out.extend(
                args.filter(|(k, v)| kind(v) == "arg" && !NOT_PROPERTIES.contains(&k.as_str()))
                    .map(|(k, _)| k.clone()),
            );
        }
    }
    let key = menu.join("/");
    for (m, props) in READ_ONLY {
        if *m == key {
            out.extend(props.iter().map(|p| p.to_string()));
        }
    }
    out
}

/// `/a/b` and `c` → `/a/b/c`.
fn shown(menu: &[String], name: &str) -> String {
    format!(
        "/{}",
        menu.iter()
            .map(String::as_str)
            .chain([name])
            .collect::<Vec<_>>()
            .join("/")
    )
}

/// A set of releases, as bits over the checker's release list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Set(u32);

// ==== lexer and parser ==========================================================================
//
// RouterOS script (help.mikrotik.com, "Scripting"): commands end at a newline or `;`; `\` at the
// end of a line joins it with the next; `#` at the start of a command comments out the line;
// `[…]` is a command whose result is a value, `{…}` a block (or an array), `(…)` an expression;
// strings are `"…"` with `\` escapes. A word glued to the next token (`name=` + `"x"`,
// `address=` + `(…)`) forms one argument.

#[derive(Debug)]
enum Tok {
    Word(String),
    /// A string literal, escapes still in.
    Str(String),
    Open(char),
    Close(char),
    End,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    line: usize,
    /// No whitespace between this token and the one before.
    glued: bool,
}

fn lex(src: &str, first_line: usize) -> Result<Vec<Token>, (usize, String)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out: Vec<Token> = Vec::new();
    let (mut i, mut line, mut glued) = (0, first_line, false);
    let continuation = |i: usize| -> Option<usize> {
        // `\` then the end of the line (CR LF or LF): the length to skip.
        match (chars.get(i), chars.get(i + 1), chars.get(i + 2)) {
            (Some('\\'), Some('\n'), _) => Some(2),
            (Some('\\'), Some('\r'), Some('\n')) => Some(3),
            _ => None,
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if let Some(skip) = continuation(i) {
            i += skip;
            line += 1;
            glued = false;
            continue;
        }
        let start = line;
        let tok = match c {
            ' ' | '\t' | '\r' => {
                i += 1;
                glued = false;
                continue;
            }
            '\n' | ';' => {
                i += 1;
                if c == '\n' {
                    line += 1;
                }
                Tok::End
            }
            '#' if matches!(
                out.last().map(|t| &t.tok),
                None | Some(Tok::End) | Some(Tok::Open('{'))
            ) =>
            {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '"' => {
                let mut raw = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None | Some('\n') => return Err((start, "unterminated string".into())),
                        Some('"') => break,
                        Some('\\') => {
                            if let Some(skip) = continuation(i) {
                                i += skip;
                                line += 1;
                                continue;
                            }
                            raw.push('\\');
                            raw.push(*chars.get(i + 1).ok_or((start, "trailing \\".into()))?);
                            i += 2;
                        }
                        Some(&c) => {
                            raw.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                Tok::Str(raw)
            }
            '[' | '{' | '(' => {
                i += 1;
                Tok::Open(c)
            }
            ']' | '}' | ')' => {
                i += 1;
                Tok::Close(c)
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.get(i) {
                    if " \t\r\n;\"[]{}()".contains(c) || continuation(i).is_some() {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
                Tok::Word(word)
            }
        };
        let is_end = matches!(tok, Tok::End);
        out.push(Token {
            tok,
            line: start,
            glued,
        });
        glued = !is_end;
    }
    Ok(out)
}

#[derive(Debug)]
enum Item {
    Word(String),
    Str(String),
    Group(char, Vec<Node>),
    End,
}

#[derive(Debug)]
struct Node {
    item: Item,
    line: usize,
    glued: bool,
}

fn parse(tokens: &[Token]) -> Result<Vec<Node>, (usize, String)> {
    fn group(
        tokens: &[Token],
        pos: &mut usize,
        close: Option<char>,
    ) -> Result<Vec<Node>, (usize, String)> {
        let mut out = Vec::new();
        while let Some(t) = tokens.get(*pos) {
            *pos += 1;
            let item = match &t.tok {
                Tok::Word(w) => Item::Word(w.clone()),
                Tok::Str(s) => Item::Str(s.clone()),
                Tok::End => Item::End,
                Tok::Open(o) => {
                    let c = match o {
                        '[' => ']',
                        '{' => '}',
                        _ => ')',
                    };
                    Item::Group(*o, group(tokens, pos, Some(c))?)
                }
                Tok::Close(c) if Some(*c) == close => return Ok(out),
                Tok::Close(c) => return Err((t.line, format!("unexpected `{c}`"))),
            };
            out.push(Node {
                item,
                line: t.line,
                glued: t.glued,
            });
        }
        match close {
            None => Ok(out),
            Some(c) => Err((
                tokens.last().map_or(0, |t| t.line),
                format!("missing `{c}`"),
            )),
        }
    }
    group(tokens, &mut 0, None)
}

/// One argument: the nodes glued together.
type Atom<'n> = Vec<&'n Node>;

/// Commands (split at ends), each a list of atoms.
fn commands(nodes: &[Node]) -> Vec<Vec<Atom<'_>>> {
    let mut out = Vec::new();
    let mut cmd: Vec<Atom> = Vec::new();
    for n in nodes {
        if matches!(n.item, Item::End) {
            if !cmd.is_empty() {
                out.push(std::mem::take(&mut cmd));
            }
        } else if n.glued && !cmd.is_empty() {
            cmd.last_mut().unwrap().push(n);
        } else {
            cmd.push(vec![n]);
        }
    }
    if !cmd.is_empty() {
        out.push(cmd);
    }
    out
}

fn word<'n>(atom: &Atom<'n>) -> Option<&'n str> {
    match &atom[0].item {
        Item::Word(w) => Some(w),
        _ => None,
    }
}

fn is_ident(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_lowercase())
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `name=value` → `name` (also `.id=`).
fn named(w: &str) -> Option<&str> {
    let (name, _) = w.split_once('=')?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    ok.then_some(name)
}

fn mentions_ros_ver(nodes: &[Node]) -> bool {
    nodes.iter().any(|n| match &n.item {
        Item::Word(w) => w.contains("$rosVer"),
        Item::Group(_, inner) => mentions_ros_ver(inner),
        _ => false,
    })
}

/// A string literal's value (the escapes of help.mikrotik.com "Scripting": `\"`, `\\`, `\$`,
/// `\?`, `\_`, `\n`, `\r`, `\t`).
fn unescape(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('_') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

// ==== the checker ===============================================================================

/// One problem, on one line, in the releases listed.
#[derive(Debug)]
struct Finding {
    file: String,
    line: usize,
    releases: Vec<&'static str>,
    message: String,
    /// In a `:parse` string run under `:do {…} on-error=`: fails at run time, caught.
    guarded: bool,
}

#[derive(Clone)]
struct Ctx {
    set: Set,
    /// The menu relative commands run in (`/ip/firewall/raw` + `remove [find …]`).
    menu: Vec<String>,
    in_parse: bool,
    /// Inside the body of a `:do {…} on-error={…}`.
    guarded: bool,
}

impl Ctx {
    fn new(set: Set) -> Self {
        Ctx {
            set,
            menu: Vec::new(),
            in_parse: false,
            guarded: false,
        }
    }
}

struct Checker<'r> {
    releases: &'r [Release],
    file: String,
    findings: Vec<Finding>,
    /// Menu commands read (once each, whatever the number of releases).
    commands: usize,
    /// `:parse` strings read.
    parsed: usize,
}

impl<'r> Checker<'r> {
    fn new(releases: &'r [Release]) -> Self {
        Checker {
            releases,
            file: String::new(),
            findings: Vec::new(),
            commands: 0,
            parsed: 0,
        }
    }

    /// The releases from `oldest` on.
    fn from(&self, oldest: &str) -> Set {
        let n = release_number(oldest);
        self.filter(Set(u32::MAX), |r| r.number >= n)
    }

    fn filter(&self, set: Set, keep: impl Fn(&Release) -> bool) -> Set {
        let mut out = 0;
        for (i, r) in self.releases.iter().enumerate() {
            if set.0 & (1 << i) != 0 && keep(r) {
                out |= 1 << i;
            }
        }
        Set(out)
    }

    fn each(&self, set: Set) -> impl Iterator<Item = (usize, &'r Release)> + use<'r> {
        let releases = self.releases;
        releases
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.0 & (1 << i) != 0)
    }

    fn find(&mut self, ctx: &Ctx, line: usize, release: usize, message: String) {
        let guarded = ctx.in_parse && ctx.guarded;
        let name = self.releases[release].name;
        if let Some(f) = self.findings.iter_mut().find(|f| {
            f.file == self.file && f.line == line && f.message == message && f.guarded == guarded
        }) {
            if !f.releases.contains(&name) {
                f.releases.push(name);
            }
            return;
        }
        self.findings.push(Finding {
            file: self.file.clone(),
            line,
            releases: vec![name],
            message,
            guarded,
        });
    }

    fn find_all(&mut self, ctx: &Ctx, line: usize, message: String) {
        for (i, _) in self.each(ctx.set) {
            self.find(ctx, line, i, message.clone());
        }
    }

    /// The findings `keep` selects, one per line: `file:line [releases]: message`.
    fn report(&self, keep: impl Fn(&Finding) -> bool) -> String {
        let mut out = String::new();
        for f in self.findings.iter().filter(|f| keep(f)) {
            out.push_str(&format!(
                "{}:{} [{}]: {}\n",
                f.file,
                f.line,
                f.releases.join(" "),
                f.message
            ));
        }
        out
    }

    fn check_file(&mut self, path: &str, set: Set) {
        let src = read(&repo(path));
        self.check_source(path, &src, 1, &Ctx::new(set));
    }

    fn check_source(&mut self, file: &str, src: &str, first_line: usize, ctx: &Ctx) {
        self.file = file.to_string();
        match lex(src, first_line).and_then(|t| parse(&t)) {
            Ok(nodes) => self.block(&nodes, ctx),
            Err((line, e)) => self.find_all(ctx, line, format!("cannot read the script: {e}")),
        }
    }

    fn block(&mut self, nodes: &[Node], ctx: &Ctx) {
        // A menu line (`/ip/firewall/raw` alone) moves the following commands of the block there.
        let mut ctx = ctx.clone();
        for cmd in commands(nodes) {
            self.command(&cmd, &mut ctx);
        }
    }

    fn command(&mut self, atoms: &[Atom], ctx: &mut Ctx) {
        let head = atoms[0][0];
        match &head.item {
            Item::Word(w) if w.starts_with(':') => self.script_command(&w[1..], atoms, ctx),
            Item::Word(w) if w.starts_with('/') => {
                let path: Vec<String> = w
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                self.menu_command(path, atoms, ctx);
            }
            Item::Word(w) if is_ident(w) => {
                if ctx.menu.is_empty() {
                    self.find_all(ctx, head.line, format!("`{w}` outside a menu"));
                } else {
                    let mut path = ctx.menu.clone();
                    path.push(w.clone());
                    self.menu_command(path, atoms, ctx);
                }
            }
            // `$function args`, values and groups: only what is inside groups is code.
            Item::Word(w) if w.starts_with('$') => self.values(atoms, ctx),
            Item::Word(w) => self.find_all(ctx, head.line, format!("cannot read `{w}`")),
            _ => self.values(atoms, ctx),
        }
    }

    /// Commands inside the groups of these atoms.
    fn values(&mut self, atoms: &[Atom], ctx: &Ctx) {
        for node in atoms.iter().flatten() {
            self.value(node, ctx);
        }
    }

    fn value(&mut self, node: &Node, ctx: &Ctx) {
        if let Item::Group(kind, inner) = &node.item {
            match kind {
                '(' => {
                    for n in inner {
                        self.value(n, ctx);
                    }
                }
                _ => self.block(inner, ctx),
            }
        }
    }

    // === `:commands` ===

    fn script_command(&mut self, name: &str, atoms: &[Atom], ctx: &Ctx) {
        let line = atoms[0][0].line;
        for (i, r) in self.each(ctx.set) {
            let Some(cmd) = child(&r.tree, name).filter(|c| kind(c) == "cmd") else {
                self.find(ctx, line, i, format!("no script command `:{name}`"));
                continue;
            };
            for atom in &atoms[1..] {
                if let Some(arg) = word(atom).and_then(named) {
                    if !has_arg(cmd, arg) {
                        self.find(ctx, line, i, format!("`:{name}` has no argument `{arg}`"));
                    }
                }
            }
        }
        let positional = atoms.get(1);
        match name {
            "parse" => self.parse_string(positional, line, ctx),
            "if" => {
                let (then, otherwise) = match positional.map(|a| self.version_switch(a, ctx)) {
                    Some(Some((then, otherwise))) => (then, otherwise),
                    _ => (ctx.set, ctx.set),
                };
                for atom in &atoms[1..] {
                    let set = match word(atom).and_then(named) {
                        Some("do") => then,
                        Some("else") => otherwise,
                        _ => ctx.set,
                    };
                    if set.0 != 0 {
                        self.values(std::slice::from_ref(atom), &Ctx { set, ..ctx.clone() });
                    }
                }
            }
            "do" => {
                let on_error = atoms[1..]
                    .iter()
                    .any(|a| word(a).and_then(named) == Some("on-error"));
                for atom in &atoms[1..] {
                    let body = word(atom).is_none();
                    let guarded = ctx.guarded || (body && on_error);
                    self.values(
                        std::slice::from_ref(atom),
                        &Ctx {
                            guarded,
                            ..ctx.clone()
                        },
                    );
                }
            }
            _ => self.values(&atoms[1..], ctx),
        }
    }

    /// `($rosVer OP N)`: the releases that take the `do=` branch and those that take `else=`.
    fn version_switch(&mut self, cond: &Atom, ctx: &Ctx) -> Option<(Set, Set)> {
        let Item::Group('(', inner) = &cond[0].item else {
            return None;
        };
        let words: Vec<&str> = inner
            .iter()
            .filter_map(|n| match &n.item {
                Item::Word(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        let mentions = mentions_ros_ver(inner);
        let (["$rosVer", op, n], true) = (words.as_slice(), words.len() == inner.len()) else {
            if mentions {
                self.find_all(
                    ctx,
                    cond[0].line,
                    "a version switch is `($rosVer OP N)` alone, e.g. `($rosVer >= 720)`".into(),
                );
            }
            return None;
        };
        let n: u32 = n.parse().ok()?;
        let test = |v: u32| match *op {
            ">=" => Some(v >= n),
            ">" => Some(v > n),
            "<" => Some(v < n),
            "<=" => Some(v <= n),
            "=" => Some(v == n),
            "!=" => Some(v != n),
            _ => None,
        };
        test(0)?;
        let then = self.filter(ctx.set, |r| test(r.number) == Some(true));
        let otherwise = self.filter(ctx.set, |r| test(r.number) == Some(false));
        Some((then, otherwise))
    }

    /// `:parse "code"` or `:parse ("co" . "de")`: the code is checked like the file around it.
    fn parse_string(&mut self, arg: Option<&Atom>, line: usize, ctx: &Ctx) {
        let literal = arg.and_then(|atom| match &atom[0].item {
            Item::Str(s) if atom.len() == 1 => Some(s.clone()),
            Item::Group('(', inner) if atom.len() == 1 => {
                let mut out = String::new();
                for (i, n) in inner.iter().enumerate() {
                    match (&n.item, i % 2) {
                        (Item::Str(s), 0) => out.push_str(s),
                        (Item::Word(dot), 1) if dot == "." => {}
                        _ => return None,
                    }
                }
                Some(out)
            }
            _ => None,
        });
        let Some(raw) = literal else {
            self.find_all(
                ctx,
                line,
                "`:parse` of a computed string cannot be checked: parse a literal per version branch"
                    .into(),
            );
            return;
        };
        self.parsed += 1;
        let file = self.file.clone();
        let inner = Ctx {
            menu: Vec::new(),
            in_parse: true,
            ..ctx.clone()
        };
        self.check_source(&file, &unescape(&raw), line, &inner);
        self.file = file;
    }

    // === menu commands ===

    fn menu_command(&mut self, path: Vec<String>, atoms: &[Atom], ctx: &mut Ctx) {
        let line = atoms[0][0].line;
        self.commands += 1;
        // The menu the command's own `[find …]` arguments run in.
        let mut menu_of_args = path.clone();
        let mut is_menu_line = false;
        for (i, r) in self.each(ctx.set) {
            let mut menu: Vec<String> = Vec::new();
            let mut node = &r.tree;
            let mut rest = &atoms[1..];
            let mut cmd: Option<(&str, &Value)> = None;
            let mut unknown = None;
            for seg in &path {
                match child(node, seg) {
                    Some(n) if is_menu(n) && cmd.is_none() => {
                        menu.push(seg.clone());
                        node = n;
                    }
                    Some(n) if kind(n) == "cmd" && cmd.is_none() => cmd = Some((seg, n)),
                    _ => {
                        unknown = Some(shown(&menu, seg));
                        break;
                    }
                }
            }
            // `/ip/firewall/raw remove …`: a command word after a menu path.
            while let (None, None, Some(w)) = (&cmd, &unknown, rest.first().and_then(word)) {
                if !(is_ident(w) && rest[0].len() == 1) {
                    break;
                }
                match child(node, w) {
                    Some(n) if is_menu(n) => {
                        menu.push(w.to_string());
                        node = n;
                    }
                    Some(n) if kind(n) == "cmd" => cmd = Some((w, n)),
                    _ => unknown = Some(shown(&menu, w)),
                }
                rest = &rest[1..];
            }
            if let Some(path) = unknown {
                self.find(ctx, line, i, format!("no menu or command {path}"));
                continue;
            }
            menu_of_args = menu.clone();
            match cmd {
                None if rest.is_empty() => is_menu_line = true,
                None => self.find(ctx, line, i, format!("/{} is a menu", menu.join("/"))),
                Some((name, cmd)) => self.arguments(i, &menu, name, cmd, rest, line, ctx),
            }
        }
        if is_menu_line {
            ctx.menu = menu_of_args;
            return;
        }
        let args_ctx = Ctx {
            menu: menu_of_args,
            ..ctx.clone()
        };
        self.values(&atoms[1..], &args_ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn arguments(
        &mut self,
        release: usize,
        menu: &[String],
        name: &str,
        cmd: &Value,
        atoms: &[Atom],
        line: usize,
        ctx: &Ctx,
    ) {
        let releases = self.releases;
        let shown = shown(menu, name);
        let props = properties(&releases[release].tree, menu);
        let mut positional: Vec<&Atom> = Vec::new();
        for (k, atom) in atoms.iter().enumerate() {
            let w = word(atom);
            if name == "find" || (w == Some("where") && atom.len() == 1) {
                if !has_arg(cmd, "where") {
                    self.find(ctx, line, release, format!("{shown} takes no `where`"));
                }
                let from = if w == Some("where") { k + 1 } else { k };
                self.conditions(release, menu, &props, &atoms[from..], line, ctx);
                break;
            }
            if let Some(arg) = w.and_then(named) {
                if !has_arg(cmd, arg) {
                    let m = format!("{shown} has no argument `{arg}`");
                    self.find(ctx, line, release, m);
                }
                continue;
            }
            if w.is_some_and(|w| is_ident(w) && atom.len() == 1 && has_arg(cmd, w)) {
                continue; // a flag such as `as-value`
            }
            positional.push(atom);
        }
        let item = has_arg(cmd, "number") || has_arg(cmd, "numbers");
        let value_name = has_arg(cmd, "value-name");
        let max = usize::from(item) + usize::from(value_name);
        // Values (`$id`, `[find …]`, a file name) may be unnamed; a bare name is an argument
        // unless it names the item (`/ip/service/get api disabled`).
        for atom in positional.iter().skip(max) {
            if let Some(w) = word(atom).filter(|w| is_ident(w) && atom.len() == 1) {
                self.find(ctx, line, release, format!("{shown} has no argument `{w}`"));
            }
        }
        if name == "get" && value_name && positional.len() == max {
            match word(positional[max - 1]) {
                Some(p) if is_ident(p) => {
                    if !props.contains(p) {
                        let m = format!("/{} has no property `{p}`", menu.join("/"));
                        self.find(ctx, line, release, m);
                    }
                }
                _ => {
                    let m = format!("{shown}: name the property literally");
                    self.find(ctx, line, release, m);
                }
            }
        }
    }

    /// `where` conditions: `prop=value`, `prop~value`, `prop!=value`, `prop<value`, `prop>value`,
    /// bare `prop`, `!prop`, `(…)`, joined by `and`/`or`/`not`.
    fn conditions(
        &mut self,
        release: usize,
        menu: &[String],
        props: &BTreeSet<String>,
        atoms: &[Atom],
        line: usize,
        ctx: &Ctx,
    ) {
        for atom in atoms {
            let Some(w) = word(atom) else {
                if let Item::Group('(', inner) = &atom[0].item {
                    let nested: Vec<Vec<Atom>> = commands(inner);
                    for cmd in &nested {
                        self.conditions(release, menu, props, cmd, line, ctx);
                    }
                }
                continue;
            };
            let w = w.trim_start_matches('!');
            if ["and", "or", "not", "&&", "||", ""].contains(&w) {
                continue;
            }
            let end = w.find(|c: char| "=~!<>".contains(c)).unwrap_or(w.len());
            let (prop, rest) = w.split_at(end);
            if !props.contains(prop) {
                let m = format!("/{} has no property `{prop}`", menu.join("/"));
                self.find(ctx, line, release, m);
            }
            // `find where list=$list`: inside `where` the item's own properties are variables,
            // so `$list` is the item's list and the condition always holds (help.mikrotik.com,
            // "Scripting": do not name variables like the arguments of a command).
            let value = rest.trim_start_matches(|c: char| "=~!<>".contains(c));
            if value.strip_prefix('$') == Some(prop) {
                let m = format!(
                    "`{w}`: a variable named like the property always matches (name it differently)"
                );
                self.find(ctx, line, release, m);
            }
        }
    }
}

// ==== the YAML validator ========================================================================

/// Loads YAML and validates it against the `/app` JSON Schemas (Draft 7) with Python's
/// `jsonschema` and PyYAML, as other tests here use Python's librouteros; no Rust dependency, so
/// nothing more to compile. Needs `python3 -m pip install jsonschema==4.26.0 PyYAML==6.0.3`
/// (scripts/test.sh); without them the tests fail, they are never skipped.
const VALIDATOR: &str = r#"
import json, sys
try:
    import jsonschema, referencing, yaml
except ImportError as e:
    sys.exit(f"missing Python module {e.name}")
job = json.load(sys.stdin)
registry = referencing.Registry().with_resources(
    (s["$id"], referencing.Resource.from_contents(s)) for s in job["schemas"])
out = []
for doc in job["documents"]:
    value = yaml.safe_load(doc["yaml"])
    schema = registry.contents(doc["schema"])
    validator = jsonschema.Draft7Validator(schema, registry=registry)
    errors = sorted("/".join(map(str, e.absolute_path)) + ": " + e.message
                    for e in validator.iter_errors(value))
    out.append({"value": value if doc["keep"] else None, "errors": errors})
json.dump(out, sys.stdout)
"#;

/// Each document (`"app"` or `"store"`, a name, its YAML) against the schemas of `release`:
/// the parsed value (for our own files) and the errors.
fn validate_yaml(release: &str, docs: &[(&str, &str, &str)]) -> Vec<(Value, Vec<String>)> {
    let schema = |kind: &str| -> Value {
        let path = data(&format!(
            "routeros-schema/routeros-app-yaml-{kind}schema-{release}.json"
        ));
        serde_json::from_str(&read(&path)).unwrap()
    };
    let (app, store) = (schema(""), schema("store-"));
    let documents: Vec<Value> = docs
        .iter()
        .map(|(kind, name, yaml)| {
            let id = if *kind == "app" {
                &app["$id"]
            } else {
                &store["$id"]
            };
            // Only our own files (named `*.yaml`) come back parsed.
            json!({"schema": id, "yaml": yaml, "keep": name.ends_with(".yaml")})
        })
        .collect();
    let job = json!({"schemas": [app, store], "documents": documents});

    let mut child = Command::new("python3")
        .args(["-c", VALIDATOR])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}; install Python 3 (see scripts/test.sh)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the YAML validator failed: {}\ninstall its modules: python3 -m pip install \
         'jsonschema==4.26.0' 'PyYAML==6.0.3'",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), docs.len());
    results
        .into_iter()
        .map(|r| {
            let errors = r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect();
            (r["value"].clone(), errors)
        })
        .collect()
}

// ==== files =====================================================================================

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

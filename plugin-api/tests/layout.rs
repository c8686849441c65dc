//! The ABI, pinned: every type reachable from the root module, with its
//! size, alignment, fields and function signatures, as abi_stable's layout
//! check sees them. Any edit to the ABI shows in review as a diff of
//! `tests/layout.txt`; the growth rule (crate docs) says when one is
//! allowed. `KILN_UPDATE_SNAPSHOTS=1 cargo test -p kiln-plugin-api --test
//! layout` rewrites it after a deliberate change.

#![allow(clippy::disallowed_methods)] // reads KILN_UPDATE_SNAPSHOTS

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write,
    path::Path,
};

use abi_stable::{
    type_layout::{TLData, TypeLayout},
    StableAbi,
};

fn type_name(l: &'static TypeLayout) -> String {
    format!("{}{}", l.name(), l.generics())
}

/// Every type reachable from `root`, once each.
fn collect(root: &'static TypeLayout, all: &mut HashMap<String, &'static TypeLayout>) {
    let key = format!("{:?}", root.get_utypeid());
    if all.insert(key, root).is_some() {
        return;
    }
    for l in root.shared_vars().type_layouts() {
        collect(l(), all);
    }
}

fn describe(l: &'static TypeLayout) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} size={} align={} package={}",
        type_name(l),
        l.size(),
        l.alignment(),
        l.package()
    );
    let fields = match l.data() {
        TLData::Struct { fields } | TLData::Union { fields } => Some(fields),
        TLData::PrefixType(p) => {
            let _ = writeln!(
                out,
                "  prefix: the first layout ends before field #{}",
                p.first_suffix_field
            );
            Some(p.fields)
        }
        TLData::Enum(e) => {
            let names: Vec<&str> = e.variant_names_iter().collect();
            let _ = writeln!(out, "  variants: {}", names.join(", "));
            Some(e.fields)
        }
        _ => None,
    };
    for f in fields.into_iter().flat_map(|f| f.iter()) {
        let _ = write!(out, "  .{}: {}", f.name(), type_name(f.layout()));
        for func in f.function_range().iter() {
            let params: Vec<String> = func
                .param_type_layouts
                .iter()
                .map(|l| type_name(l()))
                .collect();
            let ret = func
                .return_type_layout()
                .map(|l| type_name(l()))
                .unwrap_or_else(|| "()".into());
            let _ = write!(out, " = fn({}) -> {ret}", params.join(", "));
        }
        let _ = writeln!(out);
    }
    out
}

#[test]
fn the_abi_layout_is_pinned() {
    let mut all = HashMap::new();
    collect(
        <kiln_plugin_api::PluginModuleRef as StableAbi>::LAYOUT,
        &mut all,
    );
    // Sorted and deduplicated text: independent of type ids and hashing.
    let described: BTreeSet<String> = all.values().map(|l| describe(l)).collect();
    let actual: String = described.into_iter().collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/layout.txt");
    if std::env::var("KILN_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &actual).expect("write the layout snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "the plugin ABI changed (see the growth rule in the crate docs): \
         {} differs from:\n{actual}\n(KILN_UPDATE_SNAPSHOTS=1 cargo test -p kiln-plugin-api \
         --test layout rewrites it)",
        path.display()
    );
}

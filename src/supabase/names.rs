//! Storage object keys as snapshot paths: a key `a/b/c.png` is the file `c.png` in the folders
//! `a` and `b`. Tree names must be plain path components, so a component that is not one is
//! escaped: `%` `\` and NUL are percent-encoded, an empty component (`a//b`, a key ending in
//! `/`) is `%`, and `.` or `..` have their dots encoded. The mapping is one to one.

/// Escapes one key component into a tree name.
pub fn encode_component(c: &str) -> String {
    if c.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(c.len());
    for ch in c.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '\\' => out.push_str("%5C"),
            '\0' => out.push_str("%00"),
            _ => out.push(ch),
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

/// Reverses [`encode_component`].
pub fn decode_component(name: &str) -> String {
    if name == "%" {
        return String::new();
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        let ch = match code {
            Some("25") => Some('%'),
            Some("5C") => Some('\\'),
            Some("00") => Some('\0'),
            Some("2E") => Some('.'),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A key as (folders, file name), escaped.
pub fn key_to_path(key: &str) -> (Vec<String>, String) {
    let mut parts: Vec<String> = key.split('/').map(encode_component).collect();
    let name = parts.pop().unwrap_or_else(|| "%".into());
    (parts, name)
}

/// Reverses [`key_to_path`].
pub fn path_to_key(dirs: &[String], name: &str) -> String {
    let mut key = String::new();
    for d in dirs {
        key.push_str(&decode_component(d));
        key.push('/');
    }
    key.push_str(&decode_component(name));
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn awkward_keys_become_valid_names() {
        for key in [
            "a/b.png",
            "a//b",
            "dir/",
            "./x",
            "../..",
            "%/%25",
            "a\\b",
            "é/ü 1.txt",
            ".",
        ] {
            let (dirs, name) = key_to_path(key);
            for c in dirs.iter().chain([&name]) {
                crate::format::tree::validate_name(c).unwrap();
            }
            assert_eq!(path_to_key(&dirs, &name), key);
        }
    }

    proptest! {
        #[test]
        fn keys_round_trip(key in "[a-z%./\\\\\\x00-]{0,12}") {
            let (dirs, name) = key_to_path(&key);
            for c in dirs.iter().chain([&name]) {
                prop_assert!(crate::format::tree::validate_name(c).is_ok());
            }
            prop_assert_eq!(path_to_key(&dirs, &name), key);
        }
    }
}

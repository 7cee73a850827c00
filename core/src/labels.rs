//! Where a labelled photo's class comes from: a `labels.csv` (`file,label` lines), the folder
//! it sits in (one per class), or its file name (`<class>_<anything>.png`). A class is a name from
//! the model's labels file (even one that looks like a number, such as "180"), else an index.

use std::collections::HashMap;

/// The class index `name` stands for.
pub fn class_of(classes: Option<&[String]>, name: &str) -> Option<i64> {
    classes.and_then(|c| c.iter().position(|c| c == name)).map(|i| i as i64).or_else(|| name.parse::<i64>().ok().filter(|&i| i >= 0))
}

/// The class in a file name `<class>_<anything>.<ext>`.
pub fn class_of_file_name(classes: Option<&[String]>, file_name: &str) -> Option<i64> {
    let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
    stem.split_once('_').and_then(|(c, _)| class_of(classes, c))
}

/// A `labels.csv`: file name to class. A first line that names no class is a header; any other
/// such line is an error naming it.
pub fn read_labels_csv(text: &str, classes: Option<&[String]>) -> Result<HashMap<String, i64>, String> {
    let mut by_file = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (f, l) = line.rsplit_once(',').ok_or_else(|| format!("line {}: expected 'file,label'", i + 1))?;
        match class_of(classes, l.trim()) {
            Some(c) => {
                by_file.insert(f.trim().trim_matches('"').to_string(), c);
            }
            None if i == 0 => {}
            None => return Err(format!("line {}: '{}' is neither a class index nor a class name", i + 1, l.trim())),
        }
    }
    Ok(by_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_win_over_numbers_and_headers_are_skipped() {
        let names = ["0".to_string(), "180".to_string()];
        assert_eq!(class_of(Some(&names), "180"), Some(1));
        assert_eq!(class_of(None, "180"), Some(180));
        assert_eq!(class_of(Some(&names), "cat"), None);
        assert_eq!(class_of_file_name(Some(&names), "180_003.png"), Some(1));
        assert_eq!(class_of_file_name(None, "7_a_b.jpg"), Some(7));
        assert_eq!(class_of_file_name(None, "photo.png"), None);
        let csv = read_labels_csv("file,label\na.png,3\n\"b.png\", 180\n", Some(&names)).unwrap();
        assert_eq!(csv["a.png"], 3);
        assert_eq!(csv["b.png"], 1);
        assert!(read_labels_csv("a.png,3\nb.png,dog\n", None).unwrap_err().starts_with("line 2"));
    }
}

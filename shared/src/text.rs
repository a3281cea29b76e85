//! Cutting text to a limit, marked with `…` where cut: by characters for what people read
//! (GitHub's 140-character descriptions, Slack's 150-character headers), by bytes where the
//! limit is in bytes (AMQP headers), or keeping the end (the tail of a job's log).

/// At most `max` characters, the `…` included.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// At most `max` bytes of `text` (cut on a character boundary), then `…`.
pub fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `…` and the last `max` bytes of `text` (cut on a character boundary).
pub fn keep_end(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_kept_and_no_character_is_split() {
        assert_eq!(truncate_chars("short", 140), "short");
        let cut = truncate_chars(&"é".repeat(200), 140);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_bytes("abcdef", 3), "abc…");
        assert_eq!(truncate_bytes("aé", 2), "a…", "é is two bytes: not split");
        assert_eq!(keep_end("abcdef", 3), "…def");
        assert_eq!(keep_end("éa", 2), "…a");
        assert_eq!(keep_end("abc", 3), "abc");
    }
}

//! Character classes of BERT's normaliser and pre-tokenizer, over the generated tables.

use super::unicode_tables::{MN, OTHER, PUNCT, STRIP_MANY, STRIP_ONE};

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    // The ranges are sorted and disjoint: find the last range starting at or before `c`.
    let i = table.partition_point(|&(start, _)| start <= c);
    i > 0 && c <= table[i - 1].1
}

/// Whitespace as BERT counts it: `\t`, `\n`, `\r` and Unicode `White_Space`.
pub(crate) fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// Control characters BERT's cleaning drops: general category C*, except `\t`, `\n`, `\r`
/// (which count as whitespace).
pub(crate) fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && in_ranges(&OTHER, c)
}

/// Punctuation as BERT splits it: ASCII punctuation (which includes `$`, `+`, `^`, ... that
/// Unicode files under symbols) and general category P*.
pub(crate) fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || in_ranges(&PUNCT, c)
}

/// CJK ideographs, which BERT surrounds with spaces so that each is a word of its own.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// Calls `emit` with what remains of `c` after NFD and the removal of non-spacing marks (Mn):
/// nothing for a mark, the base letter for an accented letter, the jamo for a Hangul syllable.
pub(crate) fn strip_accents(c: char, mut emit: impl FnMut(char)) {
    let cp = c as u32;
    // Hangul syllables decompose algorithmically (Unicode 3.12) into leading, vowel and
    // optional trailing jamo, none of which is a mark.
    const S_BASE: u32 = 0xAC00;
    const S_COUNT: u32 = 11172;
    if (S_BASE..S_BASE + S_COUNT).contains(&cp) {
        let s = cp - S_BASE;
        let (l, v, t) = (0x1100 + s / 588, 0x1161 + (s % 588) / 28, s % 28);
        for j in [Some(l), Some(v), (t != 0).then_some(0x11A7 + t)]
            .into_iter()
            .flatten()
        {
            // The jamo ranges are valid scalar values.
            if let Some(ch) = char::from_u32(j) {
                emit(ch);
            }
        }
        return;
    }
    if cp < 0x300 && c.is_ascii() {
        emit(c);
        return;
    }
    if in_ranges(&MN, c) {
        return;
    }
    if let Ok(i) = STRIP_ONE.binary_search_by_key(&cp, |&(k, _)| k) {
        if let Some(ch) = char::from_u32(STRIP_ONE[i].1) {
            emit(ch);
        }
        return;
    }
    if let Ok(i) = STRIP_MANY.binary_search_by_key(&cp, |&(k, _)| k) {
        STRIP_MANY[i].1.chars().for_each(emit);
        return;
    }
    emit(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(c: char) -> ([char; 4], usize) {
        let mut out = ['\0'; 4];
        let mut n = 0;
        strip_accents(c, |d| {
            out[n] = d;
            n += 1;
        });
        (out, n)
    }

    #[test]
    fn classes() {
        assert!(is_punctuation('$') && is_punctuation('¿') && is_punctuation('。'));
        assert!(!is_punctuation('a') && !is_punctuation('€'));
        assert!(is_control('\u{200B}') && is_control('\u{7}') && !is_control('\n'));
        assert!(is_cjk('中') && !is_cjk('あ'));
        assert!(is_whitespace('\u{3000}') && is_whitespace('\t'));
    }

    #[test]
    fn accents() {
        assert_eq!(stripped('é'), (['e', '\0', '\0', '\0'], 1));
        assert_eq!(stripped('\u{301}').1, 0);
        assert_eq!(
            stripped('한'),
            (['\u{1112}', '\u{1161}', '\u{11AB}', '\0'], 3)
        );
        assert_eq!(stripped('ß'), (['ß', '\0', '\0', '\0'], 1));
    }
}

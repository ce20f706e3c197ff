//! GPT-2's byte ↔ unicode table.
//!
//! Byte-level BPE works on raw bytes, but GPT-2's `vocab.json` and `merges.txt` store tokens
//! as *strings*. OpenAI's `encoder.py` (`bytes_to_unicode`) maps each of the 256 byte values
//! to a printable character so tokens can be written as text: the 188 printable Latin-1 bytes
//! (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) map to themselves, and the other 68 (control characters,
//! space, DEL, NBSP, soft hyphen) map, in byte order, to U+0100, U+0101, … — which is why a
//! leading space appears as `Ġ` (U+0120) in the vocabulary.
//!
//! The order of the table also fixes the ids of the 256 single-byte tokens in GPT-2 (and in
//! Hugging Face's byte-level trainer, which sorts its alphabet by code point): ids follow the
//! code point of the mapped character, printable bytes first.

/// Is this byte one that `bytes_to_unicode` maps to itself?
const fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte → char table, built at compile time.
const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        if is_printable_byte(b as u8) {
            table[b] = b as u8 as char;
        } else {
            // Unprintable bytes go, in byte order, to U+0100 + n. These are all valid
            // scalar values (U+0100..U+0143), so the `match` cannot fail.
            table[b] = match char::from_u32(256 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
        }
        b += 1;
    }
    table
};

/// The character that stands for byte `b` in GPT-2's vocabulary files.
#[inline]
pub fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte a vocabulary character stands for, or `None` if `c` is not one of the 256.
#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 && is_printable_byte(u as u8) {
        Some(u as u8)
    } else if (256..256 + 68).contains(&u) {
        // The (u - 256)-th unprintable byte.
        let k = (u - 256) as usize;
        (0..=255u8).filter(|&b| !is_printable_byte(b)).nth(k)
    } else {
        None
    }
}

/// Writes `bytes` as a vocabulary string (`" the"` → `"Ġthe"`).
pub fn bytes_to_token_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// Reads a vocabulary string back into bytes; `None` if a character is not in the table.
pub fn token_string_to_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// The 256 byte values in the order of their characters' code points: the order of the
/// single-byte token ids in GPT-2's vocabulary and in a vocabulary we train.
pub fn bytes_in_char_order() -> [u8; 256] {
    let mut order = [0u8; 256];
    let mut chars: Vec<(char, u8)> = (0..=255u8).map(|b| (byte_to_char(b), b)).collect();
    chars.sort_unstable();
    for (slot, (_, b)) in order.iter_mut().zip(chars) {
        *slot = b;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_matching_gpt2() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0), 'Ā');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
        let order = bytes_in_char_order();
        assert_eq!(order[0], b'!');
        assert_eq!(order[188], 0);
    }
}

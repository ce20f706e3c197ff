//! Character classes of GPT-2's pre-tokenizer: `\p{L}`, `\p{N}`, `\s`, and everything else.
//!
//! The regex `'s|…| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` only ever asks which of
//! four disjoint classes a character is in:
//! - `Letter`: general category L (Lu, Ll, Lt, Lm, Lo). Not `char::is_alphabetic`, which also
//!   takes letter numbers (Nl) and combining marks with Other_Alphabetic.
//! - `Number`: general category N (Nd, Nl, No). Not `char::is_numeric`'s exact set either.
//! - `Space`: the Unicode White_Space property (what `\s` means in the `regex` crate).
//! - `Other`: the rest (punctuation, symbols, marks, controls, unassigned code points).
//!
//! Why take the tables from `regex-syntax`: tiktoken runs this pattern with `fancy-regex`,
//! which hands these classes to the `regex` crate, whose Unicode data is `regex-syntax`'s.
//! Reading the classes from the same crate means our scanner and tiktoken agree on every code
//! point, up to the Unicode version of the two builds (regex-syntax 0.8 has Unicode 16; the
//! tiktoken fixtures only use characters assigned by Unicode 14, whose classes are stable).
//! The ranges are expanded once into a two-level table (code point >> 8 → a deduplicated
//! 256-entry block), so a lookup is two loads; ASCII takes a 128-entry table first.

use std::sync::OnceLock;

/// The four classes GPT-2's pre-tokenizer distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CharClass {
    /// Not a letter, number or whitespace.
    Other = 0,
    /// `\p{L}`.
    Letter = 1,
    /// `\p{N}`.
    Number = 2,
    /// `\s` (White_Space).
    Space = 3,
}

impl CharClass {
    #[inline]
    fn from_u8(v: u8) -> CharClass {
        match v {
            1 => CharClass::Letter,
            2 => CharClass::Number,
            3 => CharClass::Space,
            _ => CharClass::Other,
        }
    }
}

/// Classes of all of Unicode as a two-level table.
pub struct ClassTable {
    /// `ascii[b]` for b < 128.
    ascii: [u8; 128],
    /// Block number for each 256-code-point page (0x110000 / 256 = 4352 pages).
    pages: Vec<u16>,
    /// Deduplicated blocks of 256 class bytes.
    blocks: Vec<[u8; 256]>,
}

const PAGES: usize = 0x110000 / 256;

/// The code point ranges of a regex class, from regex-syntax's tables.
fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    // The three patterns are constants that regex-syntax (with the unicode-gencat,
    // unicode-perl and unicode-bool features this crate enables) always parses to a Unicode
    // class; a failure here is a build misconfiguration, not user input.
    let hir = regex_syntax::parse(pattern).expect("constant Unicode class pattern parses");
    match hir.kind() {
        regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => unreachable!("{pattern} parses to a Unicode class"),
    }
}

impl ClassTable {
    fn build() -> ClassTable {
        let mut flat = vec![CharClass::Other as u8; 0x110000];
        for (pattern, class) in [
            (r"\p{L}", CharClass::Letter),
            (r"\p{N}", CharClass::Number),
            (r"\s", CharClass::Space),
        ] {
            for (lo, hi) in class_ranges(pattern) {
                flat[lo as usize..=hi as usize].fill(class as u8);
            }
        }
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);
        let mut pages = Vec::with_capacity(PAGES);
        let mut blocks: Vec<[u8; 256]> = Vec::new();
        let mut seen: rustc_hash::FxHashMap<[u8; 256], u16> = Default::default();
        for page in flat.chunks_exact(256) {
            let mut block = [0u8; 256];
            block.copy_from_slice(page);
            let next = blocks.len() as u16;
            let idx = *seen.entry(block).or_insert_with(|| {
                blocks.push(block);
                next
            });
            pages.push(idx);
        }
        ClassTable {
            ascii,
            pages,
            blocks,
        }
    }

    /// The shared table (built on first use, about a millisecond).
    pub fn get() -> &'static ClassTable {
        static TABLE: OnceLock<ClassTable> = OnceLock::new();
        TABLE.get_or_init(ClassTable::build)
    }

    /// Class of an ASCII byte (`b < 128`).
    #[inline(always)]
    pub fn ascii(&self, b: u8) -> CharClass {
        CharClass::from_u8(self.ascii[(b & 0x7f) as usize])
    }

    /// Class of any character.
    #[inline(always)]
    pub fn of(&self, c: char) -> CharClass {
        let u = c as u32;
        if u < 128 {
            return self.ascii(u as u8);
        }
        let block = self.pages[(u >> 8) as usize] as usize;
        CharClass::from_u8(self.blocks[block][(u & 0xff) as usize])
    }
}

/// Class of a character (convenience wrapper over the shared table).
pub fn char_class(c: char) -> CharClass {
    ClassTable::get().of(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        assert_eq!(char_class('a'), CharClass::Letter);
        assert_eq!(char_class('é'), CharClass::Letter);
        assert_eq!(char_class('中'), CharClass::Letter);
        assert_eq!(char_class('7'), CharClass::Number);
        assert_eq!(char_class('½'), CharClass::Number); // No
        assert_eq!(char_class('Ⅻ'), CharClass::Number); // Nl: is_alphabetic() says true
        assert_eq!(char_class('\u{0301}'), CharClass::Other); // combining acute (Mn)
        assert_eq!(char_class('\u{0903}'), CharClass::Other); // Devanagari visarga (Mc, alphabetic)
        assert_eq!(char_class(' '), CharClass::Space);
        assert_eq!(char_class('\u{a0}'), CharClass::Space);
        assert_eq!(char_class('\u{3000}'), CharClass::Space);
        assert_eq!(char_class('\u{200b}'), CharClass::Other); // zero width space is not White_Space
        assert_eq!(char_class('\u{85}'), CharClass::Space);
        assert_eq!(char_class('!'), CharClass::Other);
        assert_eq!(char_class('😀'), CharClass::Other);
        assert!(ClassTable::get().blocks.len() < 1024);
    }
}

//! A synthetic instruction suite: twelve kinds of short tasks with checkable answers, drawn
//! deterministically from a seed, to show that supervised fine-tuning ([`super::sft`]) teaches a
//! small GPT to follow instructions. The model is tiny (4 layers, width 128, 128 tokens of
//! context, a 4096-token BPE trained on books) and learns from a few thousand demonstrations, so
//! every kind is one a model of that size can learn: answers of 1 to 5 words, instructions
//! under 30 words, and no hidden knowledge beyond a hundred fixed words and ten digits.
//!
//! | kind | example instruction | answer |
//! | --- | --- | --- |
//! | `add` | What is 3 plus 5? | 8 |
//! | `subtract` | What is 12 minus 5? | 7 |
//! | `largest` | Which number is the largest: 3, 8, 5? | 8 |
//! | `reverse` | Reverse the order of these words: cat red cup | cup red cat |
//! | `count` | How many words are in this list: cat red cup? | 3 |
//! | `first` | What is the first word in: cat red cup? | cat |
//! | `last` | What is the last word in: cat red cup? | cup |
//! | `after` | In the list cat red cup map, which word comes after red? | cup |
//! | `repeat` | Repeat the word cat 3 times. | cat cat cat |
//! | `category` | Which of these is an animal: cup red dog? | dog |
//! | `field` | name=anna city=paris age=7 -- what is the city? | paris |
//! | `fact` | Fact: the cup is red. Is the cup blue? | no |
//!
//! Each kind has three or four phrasings (templates), picked at random per item, so the model
//! learns the instruction, not one fixed string.
//!
//! Why these tasks, and why not others:
//! - **Numbers are single digits.** A BPE trained on books stores numbers as whole tokens, and
//!   irregularly (the project's 4096-token BPE has `" 18"` and `" 20"` but not `" 11"`), so a
//!   model cannot add digit by digit: every sum is a fact to memorise. Operands 0..=9 give a
//!   table of 100 sums (and their 100 inverse differences, answers 0..=9), each operand one
//!   token (` 0` is two there), each fact seen a few times in 300 examples of its kind. Two-digit sums, even
//!   without carries, would be some 2,000 facts each seen once or never, which a model this
//!   size does not learn from a few thousand examples. So a held-out arithmetic item asks a
//!   known fact in a phrasing not seen with those operands; no model of this size derives an
//!   unseen fact, and none is asked for. `largest` (of three or four distinct digits, rather
//!   than the larger of two) needs only an order over the same ten digits and has a larger
//!   space of instances.
//! - **No letters.** Sorting alphabetically, "which comes first in the alphabet", or
//!   uppercasing would need the letters inside a word, which a model that sees a word as one
//!   or two tokens does not have: it would memorise a fact per word or pair of words from a
//!   handful of examples, which is not instruction following. They are left out.
//! - **The word tasks are copying by position or by key** (`reverse`, `first`, `last`,
//!   `after`, `repeat`, `field`), counting up to five (`count`), comparing two words (`fact`),
//!   and one memorised property per word (`category`: animal, colour or food, which pretraining
//!   already clusters). Attention does these; lists have at most five words.
//!
//! The words are a fixed list of 100 common lowercase English words ([`words`]): 20 animals, 10
//! colours, 15 foods, 30 objects, 15 given names and 10 cities, no word in two groups (so
//! `category` has one right answer). Where two words were equally common, the one that is a
//! single token in the project's 4096-token BPE won (`car` over `cart`); still, about three in
//! four words are two or three tokens there (a small vocabulary spends its merges on function
//! words). That costs context, not correctness: the tasks count and copy words, and a word's
//! first token carries its leading space, so the model sees where words begin. The longest
//! instruction with its answer is under 40 tokens of that BPE.
//!
//! Splitting ([`split`]): the training items are [`generate`]d from `seed`; the held-out items
//! are drawn from a second stream and a draw whose instruction is already in the training set
//! (or earlier in the held-out set) is dropped and drawn again, so no instruction string is in
//! both, and none is twice in the held-out set. The training set keeps its duplicates (a kind
//! with 1,600 possible instructions repeats some in 1,000 draws; that is sampling, not
//! leakage). The smallest spaces are `repeat` (1,600 instructions), `add` and `subtract`
//! (1,800 each); the others have 15,000 or more. Dropping leans the held-out set towards the
//! phrasings with more instances: `add`'s three plain phrasings have 100 each and its story
//! phrasing (`"Anna had 3 and got 5 more. ..."`) 1,500, so after 500 training items per kind
//! about half of the held-out `add` items are stories (a quarter of the training ones). A
//! kind whose space is used up by the training set stops after a bounded number of draws and
//! is reported short ([`Suite::short`]).
//!
//! Files ([`write_suite`]): `train.jsonl` and `heldout.jsonl`, one chat record per line,
//! `{"kind": KIND, "messages": [{"role": "user", "content": INSTRUCTION}, {"role":
//! "assistant", "content": ANSWER}]}`, which [`super::records::read_sft`] reads as a
//! demonstration (it ignores `kind`) and [`read_suite`] reads back with its kind.
//!
//! Scoring: [`exact_match`] compares an answer with the expected one (trimmed, a final period
//! dropped, case-insensitive). A base model is measured beside the fine-tuned one with a
//! k-shot plain-text prompt ([`few_shot_prompt`]), its continuation cut at the first line
//! ([`few_shot_answer`]).

use super::template::{Message, Role};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// One instruction with its expected answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteItem {
    /// The task kind, one of [`kinds`].
    pub kind: &'static str,
    /// What the user asks (one line).
    pub instruction: String,
    /// The expected answer (one to five words).
    pub answer: String,
}

impl SuiteItem {
    /// The item as one chat record line (no trailing newline):
    /// `{"kind": KIND, "messages": [user INSTRUCTION, assistant ANSWER]}`.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "messages": [
                {"role": Role::User.name(), "content": self.instruction},
                {"role": Role::Assistant.name(), "content": self.answer},
            ],
            "kind": self.kind,
        })
        .to_string()
    }
}

/// A training set and a held-out set with no instruction in common.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suite {
    /// The training items, kinds interleaved (duplicates kept).
    pub train: Vec<SuiteItem>,
    /// The held-out items, kinds interleaved, every instruction distinct and absent from
    /// `train`.
    pub heldout: Vec<SuiteItem>,
    /// Held-out draws dropped because their instruction was in `train` or already held out.
    pub dropped: usize,
    /// Kinds with fewer held-out items than asked for: their space of instructions ran out
    /// (ask for fewer training items, or fewer held-out ones).
    pub short: Vec<&'static str>,
}

/// What [`write_suite`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteCounts {
    /// Lines in `train.jsonl`.
    pub train: usize,
    /// Lines in `heldout.jsonl`.
    pub heldout: usize,
    /// Held-out draws dropped as duplicates (see [`Suite::dropped`]).
    pub dropped: usize,
    /// Kinds with fewer held-out items than asked for (see [`Suite::short`]).
    pub short: Vec<&'static str>,
}

/// The most items per kind [`write_suite`] accepts (12 kinds × a million lines is far beyond
/// any use here and would only fill the disk).
pub const MAX_PER_KIND: usize = 1_000_000;

/// Held-out draws allowed per requested held-out item of a kind, before the kind is declared
/// short (plus [`HELDOUT_SLACK`]). Where a kind's space is not nearly used up, almost every
/// draw is kept, so the bound only matters where the space runs out.
const HELDOUT_DRAWS_PER_ITEM: usize = 20;
/// Extra held-out draws per kind beyond `HELDOUT_DRAWS_PER_ITEM` per item.
const HELDOUT_SLACK: usize = 1000;
/// Mixed into the seed for the held-out stream, so it is not the training stream.
const HELDOUT_STREAM: u64 = 0x4845_4C44_4F55_5421; // "HELDOUT!"

// ---------------------------------------------------------------------------------------------
// The words
// ---------------------------------------------------------------------------------------------

const ANIMALS: [&str; 20] = [
    "cat", "dog", "horse", "cow", "pig", "sheep", "bird", "fox", "wolf", "bear", "lion", "mouse",
    "duck", "goat", "hen", "owl", "frog", "rabbit", "bull", "whale",
];
const COLOURS: [&str; 10] = [
    "red", "blue", "green", "black", "white", "brown", "yellow", "pink", "grey", "purple",
];
const FOODS: [&str; 15] = [
    "bread", "cake", "apple", "milk", "tea", "egg", "corn", "honey", "cheese", "soup", "rice",
    "meat", "butter", "sugar", "fruit",
];
const OBJECTS: [&str; 30] = [
    "cup", "box", "book", "ball", "hat", "door", "key", "bell", "ring", "lamp", "chair", "table",
    "bed", "boat", "ship", "car", "stone", "coat", "shoe", "spoon", "knife", "pen", "clock", "bag",
    "house", "tree", "coin", "sword", "gate", "map",
];
const NAMES: [&str; 15] = [
    "anna", "tom", "john", "mary", "jane", "jack", "paul", "kate", "peter", "lucy", "ben", "sam",
    "emma", "henry", "alice",
];
const CITIES: [&str; 10] = [
    "paris", "london", "rome", "york", "dublin", "berlin", "madrid", "vienna", "oslo", "cairo",
];

/// The groups, in the order [`words`] lists them.
const GROUPS: [&[&str]; 6] = [&ANIMALS, &COLOURS, &FOODS, &OBJECTS, &NAMES, &CITIES];

/// The categories `category` asks about: name, the name with its article, the words.
const CATEGORIES: [(&str, &str, &[&str]); 3] = [
    ("animal", "an animal", &ANIMALS),
    ("colour", "a colour", &COLOURS),
    ("food", "a food", &FOODS),
];

/// The fields of a `field` record: key and the values it takes (`age` is a number instead).
const FIELDS: [(&str, &[&str]); 5] = [
    ("name", &NAMES),
    ("city", &CITIES),
    ("age", &[]),
    ("colour", &COLOURS),
    ("pet", &ANIMALS),
];

/// The 100 built-in words: animals, colours, foods, objects, given names, cities.
pub fn words() -> Vec<&'static str> {
    GROUPS.iter().flat_map(|g| g.iter().copied()).collect()
}

// ---------------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------------

/// A uniform index below `n` (positive).
fn index(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// A uniform element of `xs` (not empty).
fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[index(rng, xs.len())]
}

/// `k` distinct elements of `pool` in random order (a partial Fisher–Yates shuffle).
fn distinct<T: Copy>(rng: &mut Rng, pool: &[T], k: usize) -> Vec<T> {
    debug_assert!(k <= pool.len());
    let mut xs = pool.to_vec();
    for i in 0..k {
        let j = i + index(rng, xs.len() - i);
        xs.swap(i, j);
    }
    xs.truncate(k);
    xs
}

/// A list of `lo..=hi` distinct built-in words.
fn word_list(rng: &mut Rng, lo: usize, hi: usize) -> Vec<&'static str> {
    let k = lo + index(rng, hi - lo + 1);
    distinct(rng, &words(), k)
}

/// `name` with a capital first letter (the names are stored lowercase).
fn capitalised(name: &str) -> String {
    let mut cs = name.chars();
    match cs.next() {
        Some(c) => c.to_uppercase().chain(cs).collect(),
        None => String::new(),
    }
}

/// One kind: its name and how to draw an (instruction, answer).
struct Task {
    kind: &'static str,
    draw: fn(&mut Rng) -> (String, String),
}

const TASKS: [Task; 12] = [
    Task {
        kind: "add",
        draw: add,
    },
    Task {
        kind: "subtract",
        draw: subtract,
    },
    Task {
        kind: "largest",
        draw: largest,
    },
    Task {
        kind: "reverse",
        draw: reverse,
    },
    Task {
        kind: "count",
        draw: count,
    },
    Task {
        kind: "first",
        draw: first,
    },
    Task {
        kind: "last",
        draw: last,
    },
    Task {
        kind: "after",
        draw: after,
    },
    Task {
        kind: "repeat",
        draw: repeat,
    },
    Task {
        kind: "category",
        draw: category,
    },
    Task {
        kind: "field",
        draw: field,
    },
    Task {
        kind: "fact",
        draw: fact,
    },
];

/// The task kinds, in the order [`generate`] interleaves them.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    TASKS.iter().map(|t| t.kind)
}

impl Task {
    fn item(&self, rng: &mut Rng) -> SuiteItem {
        let (instruction, answer) = (self.draw)(rng);
        SuiteItem {
            kind: self.kind,
            instruction,
            answer,
        }
    }
}

/// `a + b`, both 0..=9.
fn add(rng: &mut Rng) -> (String, String) {
    let (a, b) = (rng.below(10), rng.below(10));
    let instruction = match rng.below(4) {
        0 => format!("What is {a} plus {b}?"),
        1 => format!("Add {a} and {b}."),
        2 => format!("Compute {a} + {b}."),
        _ => {
            let n = capitalised(pick(rng, &NAMES));
            format!("{n} had {a} and got {b} more. How many does {n} have now?")
        }
    };
    (instruction, (a + b).to_string())
}

/// `a - b` where `a = b + c`, `b` and `c` 0..=9: the additions read backwards.
fn subtract(rng: &mut Rng) -> (String, String) {
    let (b, c) = (rng.below(10), rng.below(10));
    let a = b + c;
    let instruction = match rng.below(4) {
        0 => format!("What is {a} minus {b}?"),
        1 => format!("Subtract {b} from {a}."),
        2 => format!("Compute {a} - {b}."),
        _ => {
            let n = capitalised(pick(rng, &NAMES));
            format!("{n} had {a} and gave away {b}. How many does {n} have left?")
        }
    };
    (instruction, c.to_string())
}

/// The largest of three or four distinct digits.
fn largest(rng: &mut Rng) -> (String, String) {
    let k = 3 + index(rng, 2);
    let xs = distinct(rng, &[0u64, 1, 2, 3, 4, 5, 6, 7, 8, 9], k);
    let max = xs.iter().copied().max().unwrap_or(0);
    let list = xs
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let instruction = match rng.below(3) {
        0 => format!("Which number is the largest: {list}?"),
        1 => format!("What is the biggest of {list}?"),
        _ => format!("Find the largest number in the list {list}."),
    };
    (instruction, max.to_string())
}

/// Three or four words in reverse order.
fn reverse(rng: &mut Rng) -> (String, String) {
    let ws = word_list(rng, 3, 4);
    let list = ws.join(" ");
    let instruction = match rng.below(3) {
        0 => format!("Reverse the order of these words: {list}"),
        1 => format!("Write these words in reverse order: {list}"),
        _ => format!("{list} -- say these words backwards."),
    };
    let answer = ws.iter().rev().copied().collect::<Vec<_>>().join(" ");
    (instruction, answer)
}

/// How many words (two to five) a list has.
fn count(rng: &mut Rng) -> (String, String) {
    let ws = word_list(rng, 2, 5);
    let list = ws.join(" ");
    let instruction = match rng.below(3) {
        0 => format!("How many words are in this list: {list}?"),
        1 => format!("Count the words: {list}"),
        _ => format!("{list} -- how many words is that?"),
    };
    (instruction, ws.len().to_string())
}

/// The first word of a list of three to five.
fn first(rng: &mut Rng) -> (String, String) {
    let ws = word_list(rng, 3, 5);
    let list = ws.join(" ");
    let instruction = match rng.below(3) {
        0 => format!("What is the first word in: {list}?"),
        1 => format!("Give the first word of this list: {list}"),
        _ => format!("{list} -- which word is first in the list?"),
    };
    (instruction, ws[0].to_string())
}

/// The last word of a list of three to five.
fn last(rng: &mut Rng) -> (String, String) {
    let ws = word_list(rng, 3, 5);
    let list = ws.join(" ");
    let instruction = match rng.below(3) {
        0 => format!("What is the last word in: {list}?"),
        1 => format!("Give the last word of this list: {list}"),
        _ => format!("{list} -- which word is last in the list?"),
    };
    (instruction, ws[ws.len() - 1].to_string())
}

/// The word after a given one in a list of four or five (never the last).
fn after(rng: &mut Rng) -> (String, String) {
    let ws = word_list(rng, 4, 5);
    let i = index(rng, ws.len() - 1);
    let (w, list) = (ws[i], ws.join(" "));
    let instruction = match rng.below(3) {
        0 => format!("In the list {list}, which word comes after {w}?"),
        1 => format!("Which word follows {w} in {list}?"),
        _ => format!("{list} -- what comes right after {w}?"),
    };
    (instruction, ws[i + 1].to_string())
}

/// A word repeated two to five times.
fn repeat(rng: &mut Rng) -> (String, String) {
    let w = pick(rng, &words());
    let n = 2 + index(rng, 4);
    let instruction = match rng.below(4) {
        0 => format!("Repeat the word {w} {n} times."),
        1 => format!("Say {w} {n} times."),
        2 => format!("Write {w} exactly {n} times."),
        _ => format!("Give me {w} {n} times in a row."),
    };
    (instruction, vec![w; n].join(" "))
}

/// The one animal, colour or food among three or four words; the others come from the other
/// categories and the objects.
fn category(rng: &mut Rng) -> (String, String) {
    let (name, with_article, members) = pick(rng, &CATEGORIES);
    let target = pick(rng, members);
    let others: Vec<&str> = [&ANIMALS[..], &COLOURS, &FOODS, &OBJECTS]
        .into_iter()
        .filter(|g| *g != members)
        .flat_map(|g| g.iter().copied())
        .collect();
    let n_others = 2 + index(rng, 2);
    let mut ws = distinct(rng, &others, n_others);
    let at = index(rng, ws.len() + 1);
    ws.insert(at, target);
    let list = ws.join(" ");
    let instruction = match rng.below(3) {
        0 => format!("Which of these is {with_article}: {list}?"),
        1 => format!("Pick the {name} from: {list}"),
        _ => format!("{list} -- which one is {with_article}?"),
    };
    (instruction, target.to_string())
}

/// One value of a `key=value` record of three fields.
fn field(rng: &mut Rng) -> (String, String) {
    let fields = distinct(rng, &FIELDS, 3);
    let values: Vec<String> = fields
        .iter()
        .map(|(key, vals)| match *key {
            "age" => (1 + rng.below(90)).to_string(),
            _ => pick(rng, vals).to_string(),
        })
        .collect();
    let line = fields
        .iter()
        .zip(&values)
        .map(|((k, _), v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let asked = index(rng, fields.len());
    let key = fields[asked].0;
    let instruction = match rng.below(3) {
        0 => format!("{line} -- what is the {key}?"),
        1 => format!("Give the {key} from this record: {line}"),
        _ => format!("From {line}, tell me the {key}."),
    };
    (instruction, values[asked].clone())
}

/// Yes or no: does a question's colour agree with a stated fact? Half the answers are yes.
fn fact(rng: &mut Rng) -> (String, String) {
    let subjects: Vec<&str> = OBJECTS.iter().chain(&ANIMALS).copied().collect();
    let s = pick(rng, &subjects);
    let stated = pick(rng, &COLOURS);
    let yes = rng.below(2) == 0;
    let asked = if yes {
        stated
    } else {
        let others: Vec<&str> = COLOURS.iter().copied().filter(|&c| c != stated).collect();
        pick(rng, &others)
    };
    let instruction = match rng.below(3) {
        0 => format!("Fact: the {s} is {stated}. Is the {s} {asked}?"),
        1 => format!("The {s} is {stated}. Is the {s} {asked}? Answer yes or no."),
        _ => format!("Read this: the {s} is {stated}. Question: is the {s} {asked}?"),
    };
    (instruction, if yes { "yes" } else { "no" }.to_string())
}

// ---------------------------------------------------------------------------------------------
// Suites
// ---------------------------------------------------------------------------------------------

/// `n_per_kind` items of every kind, kinds interleaved in the order of [`kinds`] (item `i` is
/// of kind `i % 12`), drawn from `Rng::new(seed)`: equal arguments give equal suites.
/// Duplicates are kept.
pub fn generate(n_per_kind: usize, seed: u64) -> Vec<SuiteItem> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n_per_kind * TASKS.len());
    for _ in 0..n_per_kind {
        for task in &TASKS {
            out.push(task.item(&mut rng));
        }
    }
    out
}

/// A training set ([`generate`]`(n_train_per_kind, seed)`) and a held-out set of up to
/// `n_heldout_per_kind` items per kind whose instructions are distinct and not in the training
/// set (see the module docs). Deterministic in its arguments.
pub fn split(n_train_per_kind: usize, n_heldout_per_kind: usize, seed: u64) -> Suite {
    let train = generate(n_train_per_kind, seed);
    let mut seen: HashSet<String> = train.iter().map(|it| it.instruction.clone()).collect();
    let mut rng = Rng::new(seed ^ HELDOUT_STREAM);
    let budget = n_heldout_per_kind
        .saturating_mul(HELDOUT_DRAWS_PER_ITEM)
        .saturating_add(HELDOUT_SLACK);
    let (mut dropped, mut short) = (0, Vec::new());
    let mut per_kind = Vec::with_capacity(TASKS.len());
    for task in &TASKS {
        let mut got = Vec::with_capacity(n_heldout_per_kind);
        let mut draws = 0;
        while got.len() < n_heldout_per_kind && draws < budget {
            draws += 1;
            let item = task.item(&mut rng);
            if seen.insert(item.instruction.clone()) {
                got.push(item);
            } else {
                dropped += 1;
            }
        }
        if got.len() < n_heldout_per_kind {
            short.push(task.kind);
        }
        per_kind.push(got.into_iter());
    }
    let mut heldout = Vec::new();
    loop {
        let before = heldout.len();
        heldout.extend(per_kind.iter_mut().filter_map(|it| it.next()));
        if heldout.len() == before {
            break;
        }
    }
    Suite {
        train,
        heldout,
        dropped,
        short,
    }
}

/// Writes [`split`]`(n_train_per_kind, n_heldout_per_kind, seed)` to `dir/train.jsonl` and
/// `dir/heldout.jsonl` (each atomically; `dir` is created if needed), one
/// [`SuiteItem::to_json_line`] per line.
pub fn write_suite(
    dir: &Path,
    n_train_per_kind: usize,
    n_heldout_per_kind: usize,
    seed: u64,
) -> Result<SuiteCounts> {
    for (what, n) in [
        ("training items per kind", n_train_per_kind),
        ("held-out items per kind", n_heldout_per_kind),
    ] {
        if n > MAX_PER_KIND {
            return Err(Error::limit(what, n as u64, MAX_PER_KIND as u64, ""));
        }
    }
    let suite = split(n_train_per_kind, n_heldout_per_kind, seed);
    for (name, items) in [
        ("train.jsonl", &suite.train),
        ("heldout.jsonl", &suite.heldout),
    ] {
        let mut text = String::new();
        for item in items {
            text.push_str(&item.to_json_line());
            text.push('\n');
        }
        crate::io::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(SuiteCounts {
        train: suite.train.len(),
        heldout: suite.heldout.len(),
        dropped: suite.dropped,
        short: suite.short,
    })
}

/// A line of a suite file, as read back.
#[derive(Deserialize)]
struct Record {
    messages: Vec<Message>,
    kind: String,
}

/// Reads a file written by [`write_suite`] back into items; an error names the line (a
/// malformed record, messages other than one user and one assistant turn, an unknown kind).
pub fn read_suite(path: &Path) -> Result<Vec<SuiteItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| {
            Error::file(
                path,
                format!(
                    "line {}: {reason}; expected a suite record as `write_suite` writes it",
                    i + 1
                ),
            )
        };
        let r: Record =
            serde_json::from_str(line).map_err(|e| bad(format!("not a suite record: {e}")))?;
        let kind = kinds()
            .find(|k| *k == r.kind)
            .ok_or_else(|| bad(format!("unknown kind `{}`", r.kind)))?;
        match r.messages.as_slice() {
            [u, a] if u.role == Role::User && a.role == Role::Assistant => out.push(SuiteItem {
                kind,
                instruction: u.content.clone(),
                answer: a.content.clone(),
            }),
            _ => {
                return Err(bad(
                    "messages must be one user turn then one assistant turn".to_string(),
                ))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Scoring
// ---------------------------------------------------------------------------------------------

/// An answer as compared: whitespace trimmed, one final period dropped, lowercase.
fn normalised(s: &str) -> String {
    let s = s.trim();
    s.strip_suffix('.').unwrap_or(s).trim_end().to_lowercase()
}

/// Whether `got` is the expected answer `want`, ignoring surrounding whitespace, one final
/// period and case (`" Paris."` matches `"paris"`; `"cat dog"` does not match `"dog cat"`).
pub fn exact_match(got: &str, want: &str) -> bool {
    normalised(got) == normalised(want)
}

/// A k-shot plain-text prompt for a base model: one `"Instruction: ...\nAnswer: ...\n\n"` block
/// per example, then `"Instruction: QUERY\nAnswer:"` (the query's answer is not shown).
pub fn few_shot_prompt(examples: &[SuiteItem], query: &SuiteItem) -> String {
    let mut out = String::new();
    for e in examples {
        out.push_str(&format!(
            "Instruction: {}\nAnswer: {}\n\n",
            e.instruction, e.answer
        ));
    }
    out.push_str(&format!("Instruction: {}\nAnswer:", query.instruction));
    out
}

/// A base model's answer in the continuation of a [`few_shot_prompt`]: its first line,
/// trimmed (a base model goes on to write the next instruction).
pub fn few_shot_answer(continuation: &str) -> &str {
    continuation.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The words of an instruction, stripped of surrounding punctuation, lowercase.
    fn plain_words(s: &str) -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// The built-in words an instruction mentions, in order (the list it gives).
    fn listed(s: &str) -> Vec<String> {
        let vocab: HashSet<&str> = words().into_iter().collect();
        plain_words(s)
            .into_iter()
            .filter(|w| vocab.contains(w.as_str()))
            .collect()
    }

    /// The numbers written in an instruction, in order.
    fn numbers(s: &str) -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap())
            .collect()
    }

    fn group_of(w: &str) -> Option<usize> {
        GROUPS.iter().position(|g| g.contains(&w))
    }

    /// The answer, recomputed from the instruction's text alone; `None` where it cannot be
    /// parsed (a test failure).
    fn solve(kind: &str, ins: &str) -> Option<String> {
        let ws = listed(ins);
        let ns = numbers(ins);
        Some(match kind {
            "add" => {
                let [a, b] = ns[..] else { return None };
                (a + b).to_string()
            }
            "subtract" => {
                // Operands appear in either order ("Subtract 5 from 12"); the answer is
                // never negative.
                let [a, b] = ns[..] else { return None };
                a.abs_diff(b).to_string()
            }
            "largest" => ns.iter().max()?.to_string(),
            "reverse" => ws.iter().rev().cloned().collect::<Vec<_>>().join(" "),
            "count" => ws.len().to_string(),
            "first" => ws.first()?.clone(),
            "last" => ws.last()?.clone(),
            "after" => {
                // The query word is mentioned twice: once in the list, once on its own,
                // before or after the list.
                let q = ws
                    .iter()
                    .find(|w| ws.iter().filter(|x| x == w).count() == 2)?;
                // The list's last word is never asked about, so a trailing mention of the
                // query is the lone one.
                let list: Vec<&String> = if ws.last() == Some(q) {
                    ws[..ws.len() - 1].iter().collect()
                } else {
                    ws[1..].iter().collect()
                };
                let at = list.iter().position(|w| *w == q)?;
                list.get(at + 1)?.to_string()
            }
            "repeat" => {
                let ([w], [n]) = (&ws[..], &ns[..]) else {
                    return None;
                };
                vec![w.as_str(); *n as usize].join(" ")
            }
            "category" => {
                let words = plain_words(ins);
                let group = if words.iter().any(|w| w == "animal") {
                    0
                } else if words.iter().any(|w| w == "colour") {
                    1
                } else if words.iter().any(|w| w == "food") {
                    2
                } else {
                    return None;
                };
                let hits: Vec<&String> = ws.iter().filter(|w| group_of(w) == Some(group)).collect();
                let [hit] = hits[..] else { return None };
                hit.clone()
            }
            "field" => {
                let mut record = BTreeMap::new();
                let mut asked = Vec::new();
                for token in ins.split_whitespace() {
                    let token = token.trim_end_matches([',', '.', '?', ':']);
                    match token.split_once('=') {
                        Some((k, v)) => {
                            record.insert(k.to_string(), v.to_string());
                        }
                        None => asked.push(token.to_string()),
                    }
                }
                let keys: Vec<&String> = asked.iter().filter(|w| record.contains_key(*w)).collect();
                let [key] = keys[..] else { return None };
                record[key].clone()
            }
            "fact" => {
                let colours: Vec<&String> = ws
                    .iter()
                    .filter(|w| COLOURS.contains(&w.as_str()))
                    .collect();
                let [stated, asked] = colours[..] else {
                    return None;
                };
                if stated == asked { "yes" } else { "no" }.to_string()
            }
            _ => return None,
        })
    }

    /// An instruction with its variable parts replaced, so that only its template is left.
    fn shape(ins: &str) -> String {
        let vocab: HashSet<&str> = words().into_iter().collect();
        let mut out: Vec<&str> = Vec::new();
        for w in ins.split_whitespace() {
            let core = w
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            let slot = w.contains('=')
                || vocab.contains(core.as_str())
                || (!core.is_empty() && core.chars().all(|c| c.is_ascii_digit()))
                || FIELDS.iter().any(|(k, _)| *k == core)
                || CATEGORIES.iter().any(|(c, _, _)| *c == core);
            let piece = if slot {
                "_"
            } else if core == "a" || core == "an" {
                "a"
            } else {
                w
            };
            if !(piece == "_" && out.last() == Some(&"_")) {
                out.push(piece);
            }
        }
        out.join(" ")
    }

    #[test]
    fn the_word_list_is_100_distinct_lowercase_words_in_disjoint_groups() {
        let ws = words();
        assert_eq!(ws.len(), 100);
        let set: HashSet<&str> = ws.iter().copied().collect();
        assert_eq!(set.len(), 100, "a word is in two groups");
        assert!(ws
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())));
        // A template word that is also a built-in word would break the lists the instructions
        // give; `every_answer_is_what_the_instruction_asks_for` reads the lists back and
        // would fail.
    }

    #[test]
    fn equal_seeds_give_equal_suites_and_other_seeds_do_not() {
        assert_eq!(generate(30, 7), generate(30, 7));
        assert_ne!(generate(30, 7), generate(30, 8));
        assert_eq!(split(40, 10, 7), split(40, 10, 7));
        assert_eq!(generate(0, 7), vec![]);
    }

    #[test]
    fn every_kind_is_present_and_the_kinds_are_interleaved() {
        let all: Vec<&str> = kinds().collect();
        assert!(all.len() >= 10);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
        let items = generate(3, 1);
        assert_eq!(items.len(), 3 * all.len());
        for (i, it) in items.iter().enumerate() {
            assert_eq!(it.kind, all[i % all.len()]);
        }
    }

    #[test]
    fn every_answer_is_what_the_instruction_asks_for() {
        let items = generate(300, 11);
        for it in &items {
            let want = solve(it.kind, &it.instruction);
            assert_eq!(
                want.as_deref(),
                Some(it.answer.as_str()),
                "{}: {:?}",
                it.kind,
                it.instruction
            );
        }
        // Both answers of the yes/no kind occur, about equally often.
        let facts: Vec<_> = items.iter().filter(|it| it.kind == "fact").collect();
        let yes = facts.iter().filter(|it| it.answer == "yes").count();
        assert!(
            (100..=200).contains(&yes),
            "{yes} of {} are yes",
            facts.len()
        );
        // The arithmetic stays inside the tables the module docs promise.
        for it in items
            .iter()
            .filter(|it| it.kind == "add" || it.kind == "subtract")
        {
            let ns = numbers(&it.instruction);
            let a: u64 = it.answer.parse().unwrap();
            assert!(ns.iter().all(|&n| n <= 18) && a <= 18, "{it:?}");
            if it.kind == "subtract" {
                assert!(a <= 9 && ns.iter().min() <= Some(&9), "{it:?}");
            } else {
                assert!(ns.iter().all(|&n| n <= 9), "{it:?}");
            }
        }
    }

    #[test]
    fn answers_are_short_and_instructions_are_one_short_line() {
        for it in generate(300, 5) {
            let n = it.answer.split_whitespace().count();
            assert!((1..=5).contains(&n), "{it:?}");
            assert!(!it.instruction.contains('\n') && !it.answer.contains('\n'));
            let words = it.instruction.split_whitespace().count();
            assert!(words <= 30, "{words} words: {it:?}");
        }
    }

    #[test]
    fn each_kind_has_three_or_four_phrasings() {
        let mut shapes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for it in generate(400, 2) {
            shapes
                .entry(it.kind)
                .or_default()
                .insert(shape(&it.instruction));
        }
        for (kind, s) in &shapes {
            assert!((3..=4).contains(&s.len()), "{kind}: {s:#?}");
        }
        assert_eq!(shapes.len(), kinds().count());
    }

    #[test]
    fn the_heldout_set_shares_no_instruction_with_the_training_set() {
        let s = split(500, 100, 7);
        assert_eq!(s.train, generate(500, 7));
        assert!(s.short.is_empty(), "{:?}", s.short);
        assert_eq!(s.heldout.len(), 100 * kinds().count());
        let train: HashSet<&str> = s.train.iter().map(|it| it.instruction.as_str()).collect();
        let held: HashSet<&str> = s.heldout.iter().map(|it| it.instruction.as_str()).collect();
        assert_eq!(
            held.len(),
            s.heldout.len(),
            "a held-out instruction repeats"
        );
        assert!(train.is_disjoint(&held));
        // The small spaces (add, subtract, repeat) did repeat training instructions, and those
        // draws were dropped, not kept.
        assert!(s.dropped > 0);
        for k in kinds() {
            assert_eq!(
                s.heldout.iter().filter(|it| it.kind == k).count(),
                100,
                "{k}"
            );
        }
        let all: Vec<&str> = kinds().collect();
        for (i, it) in s.heldout.iter().enumerate() {
            assert_eq!(it.kind, all[i % all.len()], "held-out kinds interleave");
        }
    }

    #[test]
    fn a_kind_whose_instructions_run_out_is_reported_short() {
        // 5,000 training draws of `repeat` (1,600 instructions) cover nearly all of them.
        let s = split(5000, 1000, 1);
        assert!(s.short.contains(&"repeat"), "{:?}", s.short);
        assert!(!s.short.contains(&"reverse"), "{:?}", s.short);
        let repeats = s.heldout.iter().filter(|it| it.kind == "repeat").count();
        assert!(repeats < 1000);
        let train: HashSet<&str> = s.train.iter().map(|it| it.instruction.as_str()).collect();
        assert!(s
            .heldout
            .iter()
            .all(|it| !train.contains(it.instruction.as_str())));
    }

    #[test]
    fn exact_match_ignores_space_case_and_one_final_period() {
        assert!(exact_match(" 8\n", "8"));
        assert!(exact_match("Paris.", "paris"));
        assert!(exact_match("cat dog cow", "cat dog cow."));
        assert!(exact_match("YES", "yes"));
        assert!(!exact_match("18", "8"));
        assert!(!exact_match("dog cat", "cat dog"));
        assert!(!exact_match("yes yes", "yes"));
        assert!(!exact_match("8..", "8"));
        assert!(!exact_match("", "8"));
        assert!(exact_match("", ""));
    }

    #[test]
    fn the_few_shot_prompt_is_instruction_answer_blocks_ending_at_the_query() {
        let item = |i: &str, a: &str| SuiteItem {
            kind: "add",
            instruction: i.to_string(),
            answer: a.to_string(),
        };
        let shots = [item("What is 1 plus 2?", "3"), item("Add 4 and 4.", "8")];
        let query = item("Compute 2 + 5.", "7");
        assert_eq!(
            few_shot_prompt(&shots, &query),
            "Instruction: What is 1 plus 2?\nAnswer: 3\n\n\
             Instruction: Add 4 and 4.\nAnswer: 8\n\n\
             Instruction: Compute 2 + 5.\nAnswer:"
        );
        assert_eq!(
            few_shot_prompt(&[], &query),
            "Instruction: Compute 2 + 5.\nAnswer:"
        );
        assert_eq!(few_shot_answer(" 7\n\nInstruction: Add 1 and 1."), "7");
        assert_eq!(few_shot_answer(""), "");
    }

    #[test]
    fn written_files_read_back_as_demonstrations_and_as_the_suite() {
        let dir = std::env::temp_dir().join(format!("gpt-chat-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let counts = write_suite(&dir, 20, 5, 9).unwrap();
        let s = split(20, 5, 9);
        assert_eq!(
            counts,
            SuiteCounts {
                train: 20 * 12,
                heldout: 5 * 12,
                dropped: s.dropped,
                short: vec![],
            }
        );
        let train = dir.join("train.jsonl");
        assert_eq!(read_suite(&train).unwrap(), s.train);
        assert_eq!(read_suite(&dir.join("heldout.jsonl")).unwrap(), s.heldout);
        // The SFT reader takes each line as a user turn and an assistant turn.
        let (records, report) = super::super::records::read_sft(&train, false).unwrap();
        assert_eq!(report.kept, s.train.len());
        let super::super::records::SftRecord::Chat(first) = &records[0] else {
            panic!("not a chat record: {:?}", records[0]);
        };
        assert_eq!(
            first,
            &vec![
                Message::new(Role::User, s.train[0].instruction.clone()),
                Message::new(Role::Assistant, s.train[0].answer.clone()),
            ]
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_suite_files_and_sizes_are_errors_that_say_where() {
        let dir = std::env::temp_dir().join(format!("gpt-chat-suite-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("bad.jsonl");
        let good = generate(1, 0)[0].to_json_line();
        let cases = [
            (
                good.replace("\"add\"", "\"divide\""),
                "unknown kind `divide`",
            ),
            ("{\"messages\": []}".to_string(), "not a suite record"),
            (
                "{\"kind\": \"add\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"
                    .to_string(),
                "one user turn then one assistant turn",
            ),
        ];
        for (line, want) in cases {
            crate::io::write_atomic(&path, format!("{good}\n\n{line}\n").as_bytes()).unwrap();
            let err = read_suite(&path).unwrap_err().to_string();
            assert!(err.contains("line 3") && err.contains(want), "{err}");
        }
        let err = write_suite(&dir, MAX_PER_KIND + 1, 1, 0).unwrap_err();
        assert!(err.to_string().contains("training items per kind"), "{err}");
        assert!(!dir.join("train.jsonl").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}

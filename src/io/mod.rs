//! Files: safetensors read and write, atomic writes of files and directories, and the tokenizer
//! files of a model directory. Every loader and saver of the crate goes through here, so a
//! broken or foreign file gets one kind of error, naming the file (and the tensor or field).
//!
//! This module sits at the bottom of the crate with [`crate::error`]: it knows bytes, dtypes,
//! names and paths, never a model or a layout.

pub mod atomic;
pub mod gguf;
pub mod mapped;
pub mod safetensors;
pub mod text;
pub mod tokenizer;

pub use atomic::{replace_dir, write_atomic};
pub use safetensors::{serialize_f32, write_f32, Dtype, StoredTensor, TensorFile};
pub use text::{read_text, read_text_or_stdin};
pub use tokenizer::{load_tokenizer, save_tokenizer, CHAR_TOKENIZER_FILE};

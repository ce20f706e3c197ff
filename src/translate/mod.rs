//! Translation with the encoder-decoder Transformer ([`crate::model::transformer`]): parallel
//! data and token-budget batches, the training loop, greedy and beam-search decoding, checkpoint
//! averaging, and corpus BLEU / chrF equal to sacreBLEU's.

pub mod bleu;
pub mod data;
pub mod decode;

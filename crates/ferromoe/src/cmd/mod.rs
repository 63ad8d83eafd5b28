//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod devices;
pub mod inspect;
pub mod load;
pub mod logits;
pub mod run;
pub mod serve;
pub mod synth;
pub mod tensor;
pub mod tokenize;

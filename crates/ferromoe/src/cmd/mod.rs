//! One module per subcommand.

pub mod inspect;
pub mod tensor;
pub mod load;
pub mod logits;
pub mod chat;
pub mod run;
pub mod tokenize;
pub mod serve;
pub mod synth;
pub mod bench;

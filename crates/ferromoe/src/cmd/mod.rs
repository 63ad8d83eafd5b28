//! One module per subcommand.

pub mod inspect;
pub mod tensor;
pub mod load;
pub mod logits;

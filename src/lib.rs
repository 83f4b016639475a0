pub mod codec;
pub mod compositor;
pub mod config;
pub mod ids;
pub mod layout;
pub mod media;
pub mod mixer;
pub mod room;

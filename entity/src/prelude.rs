//! Convenient re-exports: the entity types under table-like names, and the
//! enums.

pub use crate::enums::{EventAction, Severity, Status, UnknownVariant};
pub use crate::exposure_current::Entity as ExposuresCurrent;
pub use crate::exposure_event::Entity as ExposureEvents;
pub use crate::quarantined_file::Entity as QuarantinedFiles;

//! `enum_with_unknown!`: an open enum over a wire integer.
//!
//! The FastCGI specification leaves room for new record types, roles and
//! protocol statuses, so a value the crate does not know is data to answer
//! (UNKNOWN_TYPE, UNKNOWN_ROLE), never a parse failure or a panic. Each enum
//! gets its named variants, an `Unknown(raw)` variant, and lossless
//! conversions from and to the raw integer.

macro_rules! enum_with_unknown {
    (
        $(#[$enum_attr:meta])*
        pub enum $name:ident($ty:ty) {
            $(
                $(#[$variant_attr:meta])*
                $variant:ident = $value:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub enum $name {
            $(
                $(#[$variant_attr])*
                $variant,
            )+
            /// A value this version of the protocol does not define.
            ///
            /// Converting a raw value never produces `Unknown` for a value that
            /// has a named variant.
            Unknown($ty),
        }

        impl ::core::convert::From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl ::core::convert::From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

//! The machinery behind [`super::keys`]: the `config_keys!` macro, which turns the one table of
//! keys into the [`Config`] struct, its `Default`, the [`ConfigArgs`] flags and [`Key`]
//! descriptors, and the small traits its output calls. Nothing here names a key: file, env and
//! flag gathering (`sources`), parsing (`build`), printing (`render`) and the reference
//! (`reference`) all loop over `KEYS`.

use super::build::Builder;
use super::sources::{Raw, RawUser};
use super::{Config, ConfigArgs};

/// How a key's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value: in the file a string or a number; a flag given once.
    One,
    /// One value that the file may also give as a TOML boolean (`userhash = true`).
    Switch,
    /// Several values: in the file an array of strings (a lone string is a list of one), in a
    /// variable comma-separated, as a flag repeated.
    List,
    /// Users: in the file tables with `name` and `password` or `key`; elsewhere
    /// `NAME:PASSWORD` items, like a list.
    Users,
}

/// One configuration key, as `config_keys!` describes it to the rest of `config`.
pub(crate) struct Key {
    /// The key in the file, and the `Config` field.
    pub name: &'static str,
    /// The section it is documented under.
    pub section: &'static str,
    // Read only by `reference`, which only tests build.
    #[cfg_attr(not(test), allow(dead_code))]
    /// Its doc comment, one `\n`-terminated line per `///` line.
    pub doc: &'static str,
    /// The `ConfigArgs` field; the flag is its name with `-` for `_`.
    pub arg: &'static str,
    // Read only by `reference`, which only tests build.
    #[cfg_attr(not(test), allow(dead_code))]
    /// The flag's value name (`IP:PORT`), which also names the type in the reference.
    pub value: &'static str,
    pub shape: Shape,
    /// Whether SIGHUP applies a new value; otherwise it waits for a restart.
    pub reload: bool,
    // Read only by `reference`, which only tests build.
    #[cfg_attr(not(test), allow(dead_code))]
    /// The default as the reference shows it, when rendering `Config::default()` would not
    /// read well (`turnd/<version>`); empty: render it.
    pub shown_default: &'static str,
    // Read only by `reference`, which only tests build.
    #[cfg_attr(not(test), allow(dead_code))]
    /// A TOML value shown commented out in `config/turnd.toml` instead of the default; empty:
    /// the default.
    pub example: &'static str,
    /// Parses the winning setting, if any, into its `Config` field.
    pub build: fn(&mut Builder<'_>, &mut Config),
    /// The field as a TOML value, secrets redacted; `None` for an unset optional value.
    pub render: fn(&Config) -> Option<String>,
    /// The flag's value, if the flag was given.
    pub flag_value: fn(&ConfigArgs) -> Option<Raw>,
}

impl Key {
    /// The flag, `--relay-ip` for the argument `relay_ip`.
    pub fn flag(&self) -> String {
        format!("--{}", self.arg.replace('_', "-"))
    }

    /// The environment variable, `TURND_` and the key in capitals.
    pub fn env_var(&self) -> String {
        env_var(self.name)
    }
}

/// A group of keys in the reference, with the doc comment written above `section`.
pub(crate) struct Section {
    pub title: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub doc: &'static str,
}

/// What every key's variable starts with.
pub(crate) const ENV_PREFIX: &str = "TURND_";

/// The environment variable of `key`: `TURND_` and the key in capitals.
pub(crate) fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The flag's value as a raw setting, for `Key::flag_value`.
pub(crate) trait FlagValue {
    fn raw(&self, shape: Shape) -> Option<Raw>;
}

impl FlagValue for Option<String> {
    fn raw(&self, _: Shape) -> Option<Raw> {
        self.clone().map(Raw::Scalar)
    }
}

impl FlagValue for Vec<String> {
    fn raw(&self, shape: Shape) -> Option<Raw> {
        if self.is_empty() {
            return None;
        }
        Some(match shape {
            Shape::Users => Raw::Users(self.iter().cloned().map(RawUser::Text).collect()),
            _ => Raw::List(self.clone()),
        })
    }
}

/// For `ConfigArgs::overridden_by`: a later flag replaces an earlier one (a list whole).
pub(crate) trait ReplaceIfSet {
    fn replace_if_set(&mut self, later: &Self);
}

impl<T: Clone> ReplaceIfSet for Option<T> {
    fn replace_if_set(&mut self, later: &Self) {
        if later.is_some() {
            self.clone_from(later);
        }
    }
}

impl<T: Clone> ReplaceIfSet for Vec<T> {
    fn replace_if_set(&mut self, later: &Self) {
        if !later.is_empty() {
            self.clone_from(later);
        }
    }
}

/// The paragraphs of a doc comment (`///` lines, one per `\n`; blank lines between
/// paragraphs), each as one line of text.
pub(crate) fn paragraphs(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in doc.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(current.join(" "));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// A flag's `-h` text: the first paragraph of its key's doc, without the full stop.
pub(crate) fn summary(doc: &str) -> String {
    let mut first = paragraphs(doc).swap_remove(0);
    if first.ends_with('.') {
        first.pop();
    }
    first
}

/// A flag's `--help` text: its key's doc, then the key and its variable.
pub(crate) fn long_help(doc: &str, key: &str) -> String {
    let text = paragraphs(doc).join("\n\n");
    format!("{text}\n\n[key: {key}; env: {}]", env_var(key))
}

/// Declares every configuration key; used once, in `keys.rs`, whose module doc describes the
/// syntax. For each key it emits the `Config` field (with the doc comment), its default, the
/// `ConfigArgs` flag (same doc, so `turnd --help` shows it, grouped by section) and a [`Key`]
/// in `KEYS`. Options after `sighup` set further `Key` fields by name.
macro_rules! config_keys {
    (@shape one) => { $crate::config::declare::Shape::One };
    (@shape switch) => { $crate::config::declare::Shape::Switch };
    (@shape list) => { $crate::config::declare::Shape::List };
    (@shape users) => { $crate::config::declare::Shape::Users };
    (@sighup applied) => { true };
    (@sighup restart) => { false };
    // `ConfigArgs`: clap's derive reads each field's type as written (`Option<String>` is one
    // value, `Vec<String>` many), so the types must be spelled out, not left to a macro call.
    // One arm per shape adds a field to the list in `[...]`; the last emits the struct. That is
    // one level of macro recursion per key, well inside the default limit of 128.
    (@args [$($fields:tt)*] (one $($key:tt)*) $($rest:tt)*) => {
        config_keys!(@args [$($fields)* (Option<String>, $($key)*)] $($rest)*);
    };
    (@args [$($fields:tt)*] (switch $($key:tt)*) $($rest:tt)*) => {
        config_keys!(@args [$($fields)* (Option<String>, $($key)*)] $($rest)*);
    };
    (@args [$($fields:tt)*] (list $($key:tt)*) $($rest:tt)*) => {
        config_keys!(@args [$($fields)* (Vec<String>, $($key)*)] $($rest)*);
    };
    (@args [$($fields:tt)*] (users $($key:tt)*) $($rest:tt)*) => {
        config_keys!(@args [$($fields)* (Vec<String>, $($key)*)] $($rest)*);
    };
    (@args [$((
        $ty:ty, $section:literal, $arg:ident, $value:literal, [$($doc:literal)*], [$($clap:tt)*],
        $field:ident
    ))*]) => {
        /// One flag per config key, plus `--config`. Each list flag may be repeated; a flag
        /// replaces (never extends) the env or file value of its key.
        ///
        /// Flag values are kept as text and parsed by [`load`](super::load), so a bad
        /// `--relay-ports` gets the same message (naming the key) as a bad value in the file
        /// or in `TURND_RELAY_PORTS`. Config keys deliberately have no clap `env = …` (not
        /// even `--config`): that would make env and flags indistinguishable, and the
        /// precedence flags > env > file must stay explicit.
        #[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
        pub struct ConfigArgs {
            /// TOML config file [env: TURND_CONFIG]. Without one: defaults, env, flags.
            // TURND_CONFIG is read by `load`, not by clap: with clap's `env` the variable
            // would fill both `turnd --config A check-config`'s copies of this field and hide
            // which one the user typed.
            #[arg(long, short = 'c', value_name = "FILE")]
            pub config: Option<std::path::PathBuf>,
            $(
                $(#[doc = $doc])*
                // clap reads only literal doc comments: the help is set from the same text,
                // with the key and its variable added for `--help`.
                #[arg(
                    long,
                    value_name = $value,
                    help_heading = $section,
                    help = $crate::config::declare::summary(concat!($($doc, "\n",)*)),
                    long_help = $crate::config::declare::long_help(
                        concat!($($doc, "\n",)*),
                        stringify!($field),
                    ),
                )]
                $($clap)*
                pub $arg: $ty,
            )*
        }
    };
    ($(
        $(#[doc = $section_doc:literal])*
        section $section:literal {
            $(
                $(#[doc = $doc:literal])*
                $(#[arg($($clap:tt)*)])*
                $field:ident: $ty:ty = $default:expr => {
                    flag: $arg:ident $value:literal,
                    parse: $shape:ident $(($parse:expr))?,
                    sighup: $sighup:ident
                    $(, $option:ident: $option_value:expr)*
                    $(,)?
                }
            ),* $(,)?
        }
    )*) => {
        /// The effective configuration. Build it with [`load`](super::load);
        /// `Config::default()` is what turnd runs with when nothing is configured. Each field
        /// is a config key, declared in `src/config/keys.rs`.
        #[derive(Clone)]
        pub struct Config {
            $($(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*)*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($( $field: $default, )*)*
                }
            }
        }

        config_keys!(@args [] $($(
            ($shape $section, $arg, $value, [$($doc)*], [$(#[arg($($clap)*)])*], $field)
        )*)*);

        impl ConfigArgs {
            /// `self` with every flag that `later` set replaced by `later`'s value.
            pub fn overridden_by(mut self, later: &ConfigArgs) -> ConfigArgs {
                use $crate::config::declare::ReplaceIfSet;
                self.config.replace_if_set(&later.config);
                $($( self.$arg.replace_if_set(&later.$arg); )*)*
                self
            }
        }

        /// The sections of the reference, in order.
        pub(crate) const SECTIONS: &[$crate::config::declare::Section] = &[$(
            $crate::config::declare::Section {
                title: $section,
                doc: concat!($($section_doc, "\n",)*),
            },
        )*];

        /// Every config key, in the order they are documented, built and printed.
        pub(crate) const KEYS: &[$crate::config::declare::Key] = &[$($(
            $crate::config::declare::Key {
                $($option: $option_value,)*
                ..$crate::config::declare::Key {
                    name: stringify!($field),
                    section: $section,
                    doc: concat!($($doc, "\n",)*),
                    arg: stringify!($arg),
                    value: $value,
                    shape: config_keys!(@shape $shape),
                    reload: config_keys!(@sighup $sighup),
                    shown_default: "",
                    example: "",
                    build: |b, c| {
                        if let Some(value) = b.$shape(stringify!($field) $(, $parse)?) {
                            c.$field = value;
                        }
                    },
                    render: |c| $crate::config::render::TomlValue::toml_value(&c.$field),
                    flag_value: |a| $crate::config::declare::FlagValue::raw(
                        &a.$arg,
                        config_keys!(@shape $shape),
                    ),
                }
            },
        )*)*];
    };
}

pub(crate) use config_keys;

#![allow(non_local_definitions)] // emitted inside abi_stable's #[sabi_trait] expansion
//! The ABI: the root module every plugin library exports and the two trait
//! objects that cross the boundary. It is frozen: everything a call means
//! travels as JSON in the protocol ([`crate::protocol`]), so requests,
//! answers and events grow without touching this file. Changing it is a new
//! plugin-api minor version (while `0.x`), and `tests/layout.txt` shows the
//! change in review.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, RResult, RStr, RString},
    StableAbi,
};

/// The functions a plugin library exports. Obtain it through [`PluginModuleRef`].
///
/// Every answer is JSON; an `RErr` holds a JSON
/// [`PluginError`](crate::protocol::PluginError).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The handshake: takes the host's [`Hello`](crate::protocol::Hello) and
    /// answers with the plugin's. Called once, first.
    pub hello: extern "C" fn(host_hello: RStr<'_>) -> RString,

    /// The flavors this plugin offers, a JSON array of
    /// [`FlavorDescriptor`](crate::protocol::FlavorDescriptor). Constructs nothing.
    pub describe: extern "C" fn() -> RResult<RString, RString>,

    /// Construct the component of `component_type` (`image-builder`,
    /// `container-registry`) and `flavor` from validated config JSON, with
    /// `${env:..}` references already resolved by the host.
    pub construct: extern "C" fn(
        component_type: RStr<'_>,
        flavor: RStr<'_>,
        config_json: RStr<'_>,
    ) -> RResult<ComponentBox, RString>,

    /// A call that needs no constructed component (the builder's context
    /// hook, [`method::CUSTOMIZE_CONTEXT`](crate::protocol::method::CUSTOMIZE_CONTEXT)):
    /// `method` with JSON `input` for `flavor` configured by `config_json`.
    #[sabi(last_prefix_field)]
    pub call: extern "C" fn(
        method: RStr<'_>,
        flavor: RStr<'_>,
        config_json: RStr<'_>,
        input_json: RStr<'_>,
        host: HostBox,
    ) -> RResult<RString, RString>,
}

/// A constructed builder or registry. Every operation is one `call`: a
/// method name from [`crate::protocol::method`] and its JSON input; the
/// answer is JSON. A method the component does not know is answered with an
/// error of kind `unsupported`.
#[sabi_trait]
pub trait Component: Send + Sync {
    /// Run `method` with `input_json`; `host` carries events, cancellation
    /// and the calls the host offers back.
    #[sabi(last_prefix_field)]
    fn call(
        &self,
        method: RStr<'_>,
        input_json: RStr<'_>,
        host: HostBox,
    ) -> RResult<RString, RString>;
}

/// What the host offers a plugin during a call. Provided by the host; cheap
/// to clone.
#[sabi_trait]
pub trait Host: Send + Sync + Clone {
    /// Deliver one [`Event`](crate::protocol::Event) as JSON. Never blocks for
    /// long; never fails.
    fn emit(&self, event_json: RStr<'_>);

    /// Whether the user pressed Ctrl-C: stop as soon as possible.
    fn is_cancelled(&self) -> bool;

    /// A call back into the host (the registry of this build:
    /// [`method::host`](crate::protocol::method::host)), JSON in and out.
    #[sabi(last_prefix_field)]
    fn call(&self, method: RStr<'_>, input_json: RStr<'_>) -> RResult<RString, RString>;
}

/// An owned component, as constructed by a plugin.
pub type ComponentBox = Component_TO<'static, RBox<()>>;
/// A shared host handle.
pub type HostBox = Host_TO<'static, RArc<()>>;

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}

    const BASE_NAME: &'static str = "kiln_plugin";
    const NAME: &'static str = "kiln plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

/// The ABI version in every plugin's library header: this crate's
/// `major.minor.0`. abi_stable loads a plugin whose ABI version has the same
/// major (and, while `0.x`, the same minor), whatever its patch release.
pub const ABI_VERSION: &str = "0.2.0";

/// The plugin-api release this crate is (`major.minor.patch`), which is also
/// the protocol version it speaks.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    #[test]
    fn the_abi_version_is_this_release_without_its_patch() {
        let release: Vec<&str> = super::PLUGIN_API_VERSION.split('.').collect();
        assert_eq!(
            super::ABI_VERSION,
            format!("{}.{}.0", release[0], release[1]),
            "a minor release changes the ABI version; a patch release must not"
        );
    }
}

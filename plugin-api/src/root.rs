//! The root module every plugin library exports, and its version.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString, RVec},
    StableAbi,
};

#[cfg(not(feature = "__fixture_layout_v0"))]
use crate::{traits::ContextFiles, types::BuildRequest};
use crate::{
    traits::{ContainerRegistryBox, ImageBuilderBox},
    types::{FlavorDescriptor, PluginError},
};

/// The functions a plugin library exports. Obtain it through [`PluginModuleRef`].
///
/// Fields up to `construct_registry` are the first layout. Fields after it
/// were appended later and their accessors return `Option`. abi_stable's
/// layout check accepts a plugin whose module has *more* fields than the host
/// knows (built against a newer patch release), but refuses one with fewer:
/// a plugin built before a field was appended must be rebuilt, and the host
/// says so.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    /// The plugin's name, for listings (`kiln-docker`).
    pub plugin_name: extern "C" fn() -> RString,

    /// The flavors this plugin offers. Must not construct anything.
    pub describe: extern "C" fn() -> RResult<RVec<FlavorDescriptor>, PluginError>,

    /// Construct the image builder of `flavor` from validated config JSON, with
    /// `${env:..}` references already resolved by the host.
    pub construct_builder: extern "C" fn(
        flavor: RStr<'_>,
        config_json: RStr<'_>,
    ) -> RResult<ImageBuilderBox, PluginError>,

    /// Construct the container registry of `flavor` from validated config JSON.
    #[sabi(last_prefix_field)]
    pub construct_registry: extern "C" fn(
        flavor: RStr<'_>,
        config_json: RStr<'_>,
    ) -> RResult<ContainerRegistryBox, PluginError>,

    /// The builder's build-context hook (ZenML's `build_context_class`): files
    /// to add to or replace in the context, from config and request alone,
    /// without constructing the builder. Absent means no files.
    #[cfg(not(feature = "__fixture_layout_v0"))]
    pub customize_context: extern "C" fn(
        flavor: RStr<'_>,
        config_json: RStr<'_>,
        request: &BuildRequest,
    ) -> RResult<ContextFiles, PluginError>,

    /// Test fixtures only: a field appended after this version, so the tests
    /// can check that a plugin built against a newer layout still loads.
    #[cfg(feature = "__fixture_layout_next")]
    pub fixture_next: extern "C" fn() -> u32,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}

    const BASE_NAME: &'static str = "kiln_plugin";
    const NAME: &'static str = "kiln plugin";
    const VERSION_STRINGS: VersionStrings = plugin_api_version();
}

#[cfg(not(feature = "__fixture_future_version"))]
const fn plugin_api_version() -> VersionStrings {
    abi_stable::package_version_strings!()
}

#[cfg(feature = "__fixture_future_version")]
const fn plugin_api_version() -> VersionStrings {
    VersionStrings::new("9.0.0")
}

/// The plugin-api version this crate was built as (`major.minor.patch`).
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/* For `cargo check --target *-apple-darwin` on Linux only (.ci/run): ring's
 * build script compiles its C and assembly even for a check, and this header
 * comes with Apple's SDK, which is not here. What macOS's says for macOS. The
 * objects built with it are never linked: a check links nothing. */
#ifndef RFRAME_CHECK_TARGET_CONDITIONALS_H
#define RFRAME_CHECK_TARGET_CONDITIONALS_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_VISION 0
#define TARGET_OS_SIMULATOR 0
#define TARGET_OS_EMBEDDED 0
#endif

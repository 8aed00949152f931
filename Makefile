# SPDX-License-Identifier: GPL-2.0
# amd-sld: split-lock / bus-lock detection for AMD Zen on Linux 6.12 LTS.  `make help`.

KVER ?= $(shell uname -r)
KDIR ?= /lib/modules/$(KVER)/build
# Where scripts/prepare-rust-headers keeps the Rust metadata a CONFIG_RUST kernel's headers
# package lacks (Debian's 7.x), and the kernel source it takes it from (default: the
# distribution's linux-source-X.Y package). docs/admin.md, "A Debian kernel with CONFIG_RUST".
RUST_HEADERS_DIR ?= /var/lib/amd-sld/rust-headers
LINUX_SOURCE ?=
# The kernel's own Rust toolchain: Debian's rustc-web (1.96), not rustup's rustc.
KRUSTC ?= $(firstword $(wildcard /usr/bin/rustc) rustc)
KCLIPPY ?= $(firstword $(wildcard /usr/bin/clippy-driver) clippy-driver)
BINDGEN ?= $(firstword $(wildcard $(HOME)/.cargo/bin/bindgen) bindgen)

kdir_id := $(shell printf '%s' "$(abspath $(KDIR))" | md5sum | cut -c1-8)
BUILD := build/default-$(kdir_id)
KO := amd_sld.ko

MODULE_SOURCES := Kbuild $(sort $(wildcard src/kmod/*.rs src/kmod/*/*.rs src/kmod/*.c src/logic/src/*.rs \
	src/kmod/ffi/standalone/*))
# A kernel without CONFIG_RUST gets the same crate over src/kmod/ffi/standalone, built by
# scripts/standalone-build (Kbuild's header explains both ways).
STANDALONE := $(if $(shell grep -sx 'CONFIG_RUST=y' $(KDIR)/.config),,y)
# A kernel built with clang (the debug flavour: KASAN with Rust) needs its modules built by clang.
KCC := $(if $(shell grep -sx 'CONFIG_CC_IS_CLANG=y' $(KDIR)/.config),clang)
KBUILD_VARS := $(if $(KCC),CC=$(KCC)) RUSTC=$(KRUSTC) HOSTRUSTC=$(KRUSTC) CLIPPY_DRIVER=$(KCLIPPY) BINDGEN=$(BINDGEN) \
	AMD_SLD_WERROR=$(WERROR) $(if $(CLIPPY),CLIPPY=1)

.PHONY: all module module-sources rust-headers setup kernel check host-test lint vmtest demo stress bench profile-trap dkms-build install clean help

all module: $(KO)

# The copy of the sources a build compiles (scripts/debian-module builds in stages).
module-sources:
	@mkdir -p $(BUILD)
	@rm -rf $(BUILD)/src
	@cp -p --parents $(MODULE_SOURCES) $(BUILD)/

$(KO): $(MODULE_SOURCES) Makefile scripts/standalone-build $(wildcard scripts/standalone/*)
	@[ -f "$(KDIR)/.config" ] || { echo "error: $(KDIR) is not a configured kernel build tree (set KDIR)" >&2; exit 1; }
	@$(if $(STANDALONE),,scripts/check-kdir "$(KDIR)" "$(KRUSTC)")
	@mkdir -p $(BUILD) $(dir $(KO))
	@# A source file removed or renamed since the last build must not linger in the copy.
	@rm -rf $(BUILD)/src
	@cp -p --parents $(MODULE_SOURCES) $(BUILD)/
ifeq ($(STANDALONE),y)
	RUSTC=$(KRUSTC) BINDGEN=$(BINDGEN) CLIPPY_DRIVER=$(KCLIPPY) CLIPPY=$(CLIPPY) AMD_SLD_WERROR=$(WERROR) \
		MAKE_ARGS="$(if $(KCC),CC=$(KCC))" scripts/standalone-build all $(KDIR) $(BUILD)
else
	@# Headers without rust/ (Debian's 7.x): the tree prepared from the distribution's source
	@# (built first when missing, which needs root), else KDIR itself.
	@kdir=$$(KRUSTC=$(KRUSTC) BINDGEN=$(BINDGEN) RUST_HEADERS_DIR=$(RUST_HEADERS_DIR) LINUX_SOURCE=$(LINUX_SOURCE) \
		scripts/prepare-rust-headers --kdir $(KDIR)) && \
	echo "$(MAKE) -C $$kdir M=$(abspath $(BUILD)) $(KBUILD_VARS) modules" && \
	$(MAKE) -C $$kdir M=$(abspath $(BUILD)) $(KBUILD_VARS) modules
endif
	cp $(BUILD)/amd_sld.ko $@

# The Rust metadata of kernel KVER (default: the running one) whose headers lack it.
rust-headers:
	KRUSTC=$(KRUSTC) BINDGEN=$(BINDGEN) RUST_HEADERS_DIR=$(RUST_HEADERS_DIR) LINUX_SOURCE=$(LINUX_SOURCE) \
		scripts/prepare-rust-headers --kdir $(KDIR)

setup:
	scripts/setup

kernel:
	scripts/kernel test

check:
	scripts/check

host-test:
	cargo test --workspace

lint:
	cargo fmt --all --check
	rustfmt --edition 2021 --check src/kmod/amd_sld.rs src/kmod/ffi/standalone/lib.rs src/kmod/ffi/standalone/compiler_builtins.rs
	cargo clippy --workspace --all-targets -- -D warnings

vmtest:
	scripts/vmtest

demo:
	scripts/demo

stress:
	scripts/stress

bench:
	scripts/bench

profile-trap:
	scripts/profile-trap

dkms-build:
	scripts/dkms-build

install: $(KO)
	install -D -m 0644 $(KO) $(DESTDIR)/lib/modules/$(shell uname -r)/extra/amd_sld.ko
	[ -n "$(DESTDIR)" ] || depmod -a

clean:
	rm -rf build amd_sld.ko
	cargo clean

help:
	@echo "make [KDIR=<kernel build dir>]   build amd_sld.ko (default KDIR: the running kernel)"
	@echo "make setup                       install the toolchain (Debian bookworm, as root)"
	@echo "make check                       every test: host, lints, module, VM; ends 'N passed, N failed'"
	@echo "make demo                        the whole story in a VM on emulated AMD hardware (patched QEMU)"
	@echo "make install                     install amd_sld.ko for the running kernel"
	@echo "make rust-headers [KVER=...]     prepare the rust/ metadata a CONFIG_RUST kernel's headers lack (Debian 7.x; root)"
	@echo "make stress                      reliability: host fuzzing + VM suite on the debug kernel (~18 min)"
	@echo "make bench                       amd_sld beside the kernel's own handler (6.12, 7.2) on the emulated CPU; rewrites docs/performance.md"
	@echo "make profile-trap                instructions of one handled trap by function, amd_sld and 6.12's own handler"
	@echo "make dkms-build                  dkms add + build against the test kernel, in a private DKMS tree"

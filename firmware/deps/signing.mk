# Signature checking for a port's Makefile (PROTOCOL.md 6.2), one copy for every port: the Ed25519
# and SHA-256 sources fetched at build time (fetch_ed25519.sh, fetch_sha256.sh; pinned archive
# hashes; never committed), compiled as they are with warnings off (not our code), and the
# build-time trust store header (`make TRUST_KEYS=operator.pem`). $(ED_OBJ) is every fetched object
# a port links (the Ed25519 verifier and the SHA-256 that core/tm_sha256.c calls); core/tm_sha256.c
# itself is built here too, with the SHA-256 headers. Include once BUILD is final
# (before anything uses $(ED25519)), with .DEFAULT_GOAL set (these rules come first); a port's
# Makefile lives two levels below firmware/.
DEPS    := ../../build-deps
ED25519 := $(DEPS)/ed25519-supercop-ref
ED_SRC  := ed25519.c fe25519.c ge25519.c sc25519.c sha512-blocks.c sha512-hash.c verify.c
HACL    := $(DEPS)/hacl-sha2
HACL_INC := -isystem $(HACL) -isystem $(HACL)/karamel/include -isystem $(HACL)/karamel/minimal
ED_OBJ  := $(patsubst %.c,$(BUILD)/ed25519/%.o,$(ED_SRC)) $(BUILD)/hacl/Hacl_Hash_SHA2.o

$(ED25519)/.fetched:
	@../../deps/fetch_ed25519.sh $(DEPS)
	@touch $@

$(BUILD)/tm_trust_keys.h: $(TRUST_KEYS) ../../deps/trust_keys.py | $(BUILD)
	@$${PYTHON:-python3} ../../deps/trust_keys.py $@ $(TRUST_KEYS)

$(BUILD)/ed25519/%.o: $(ED25519)/.fetched
	@mkdir -p $(BUILD)/ed25519
	@$(CC) $(ARCH) -std=gnu99 -O2 -ffunction-sections -fdata-sections -w -I$(ED25519) \
	    -c $(ED25519)/$*.c -o $@

$(HACL)/.fetched:
	@../../deps/fetch_sha256.sh $(DEPS)
	@touch $@

$(BUILD)/hacl/Hacl_Hash_SHA2.o: $(HACL)/.fetched
	@mkdir -p $(BUILD)/hacl
	@$(CC) $(ARCH) -std=gnu99 -O2 -ffunction-sections -fdata-sections -w $(HACL_INC) \
	    -c $(HACL)/Hacl_Hash_SHA2.c -o $@

# the core's SHA-256 names HACL*'s: its one source that needs the fetched headers (CFLAGS: the port's)
$(BUILD)/tm_sha256.o: ../../core/tm_sha256.c ../../core/tm_sha256.h $(HACL)/.fetched | $(BUILD)
	@$(CC) $(CFLAGS) $(HACL_INC) -c $< -o $@

# Signature checking for a port's Makefile (PROTOCOL.md 6.2), one copy for every port: the Ed25519
# sources fetched at build time (fetch_ed25519.sh, pinned archive hash; never committed), compiled
# as they are with warnings off (not our code), and the build-time trust store header
# (`make TRUST_KEYS=operator.pem`). Include once BUILD is final (before anything uses $(ED25519)),
# with .DEFAULT_GOAL set (these rules come first); a port's Makefile lives two levels below firmware/.
DEPS    := ../../build-deps
ED25519 := $(DEPS)/ed25519-supercop-ref
ED_SRC  := ed25519.c fe25519.c ge25519.c sc25519.c sha512-blocks.c sha512-hash.c verify.c
ED_OBJ  := $(patsubst %.c,$(BUILD)/ed25519/%.o,$(ED_SRC))

$(ED25519)/.fetched:
	@../../deps/fetch_ed25519.sh $(DEPS)
	@touch $@

$(BUILD)/tm_trust_keys.h: $(TRUST_KEYS) ../../deps/trust_keys.py | $(BUILD)
	@$${PYTHON:-python3} ../../deps/trust_keys.py $@ $(TRUST_KEYS)

$(BUILD)/ed25519/%.o: $(ED25519)/.fetched
	@mkdir -p $(BUILD)/ed25519
	@$(CC) $(ARCH) -std=gnu99 -O2 -ffunction-sections -fdata-sections -w -I$(ED25519) \
	    -c $(ED25519)/$*.c -o $@

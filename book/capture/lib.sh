# Sourced by every script in book/capture/: where the captures go, and the
# two lines each capture file starts with (book/check.sh checks them).
captures=book/src/captures

# header COMMAND...: the command that re-records the file, then when and on
# what machine. A figure quoted from a capture means something only beside
# the machine it was measured on.
header() {
    local cpu
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    printf '# $ %s\n' "$*"
    printf '# recorded %s on %s cores (%s), Linux %s; load average %s\n' \
        "$(date -u +%Y-%m-%d)" "$(nproc)" "${cpu:-unknown CPU}" "$(uname -r)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

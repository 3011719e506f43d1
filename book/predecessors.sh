# Sourced by gen-diffs.sh, diff-chapters.sh and check.sh: which chapter each
# chapter's page compares itself with. By default the chapter just before
# it; a chapter that starts again from an earlier design names that one here.
# shellcheck disable=SC2034
declare -A PREDECESSOR=(
    [ch12]=ch09 # futures: chapter 9's loop split into an executor and a reactor that wakes tasks
    [ch15]=ch09 # io_uring: a new event loop, in place of the edge-triggered one
    [ch16]=ch09 # many cores: the edge-triggered loop, once per core
    [ch17]=ch11 # a real protocol: the reactor with timers speaks RESP
)

# Prints the chapter number a chapter's page is diffed against, or nothing.
predecessor_of() { # this_number previous_number
    echo "${PREDECESSOR[$1]:-$2}"
}

# The same, finding the previous chapter itself: `predecessor_of_chapter
# ch16` prints ch09, `predecessor_of_chapter ch07` ch06, and the first
# chapter nothing. Run from the repository's root.
predecessor_of_chapter() { # number
    local dir num prev=""
    for dir in chapters/ch[0-9][0-9]-*/; do
        [ -d "${dir}src" ] || continue
        num=$(basename "$dir")
        num=${num%%-*}
        if [ "$num" = "$1" ]; then
            [ -z "$prev" ] || predecessor_of "$num" "$prev"
            return
        fi
        prev=$num
    done
}

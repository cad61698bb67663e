# MinIO: every object of @BUCKETS_WHAT@ on @CONTAINER@, read through its S3 API by mc, the MinIO client,
# never from its data dir (whose xl.meta files are replaced by rename while part files are written elsewhere).
# mc mirrors into a staging copy kept between runs, @STAGING@, so a run fetches only what changed; the
# staging copy is then published by hard links (cp -al into the temp directory, renamed into place): mc replaces
# a file by writing a new one and renaming it over the old (cmd/client-fs.go), so no published file changes
# after it is published. The staging copy and every temp directory start with a dot: the .dumps policy leaves
# them out of snapshots. mc's config (the access keys) is copied from the read-only mount into a private temp
# dir for the run, since mc writes beside it; it is removed when the run ends.
staging=@STAGING@
since_file="$dir/.@NAME@.mirror-started"
declared_buckets="@BUCKETS@"
mirrored=""
# mc fetches an object again only when its size changed or it was written after the local copy; a same-size
# overwrite whose upload overlapped the local copy's download would be missed, so every run also copies again
# what was written since the previous run began, with this margin (seconds) for uploads that were under way.
recopy_margin=3600

mc_quiet() { mc --config-dir "$mc_config" --no-color --quiet "$@" >/dev/null; }

mirror_with_config() {
    cp @SECRETS_DIR@/@MC_CONFIG@ "$mc_config/config.json" && mkdir -p "$staging" || return
    buckets=$declared_buckets
    if [ -z "$buckets" ]; then
        # `mc ls` prints '[<date> <time> <zone>]     0B <bucket>/' a bucket.
        listing=$(mc --config-dir "$mc_config" --no-color ls src) || return
        buckets=$(printf '%s\n' "$listing" | while read -r line; do
            [ -n "$line" ] && bucket=${line##* } && printf '%s ' "${bucket%/}"
        done)
    fi
    previous=""
    [ ! -f "$since_file" ] || previous=$(cat "$since_file") || return
    count=0
    for bucket in $buckets; do
        count=$((count + 1))
        mkdir -p "$staging/$bucket" && mc_quiet mirror --overwrite --remove "src/$bucket" "$staging/$bucket" || return
        if [ -n "$previous" ]; then
            age=$(( $(date +%s) - previous + recopy_margin ))
            mc_quiet cp --recursive --newer-than "${age}s" "src/$bucket/" "$staging/$bucket/" || return
        fi
    done
    for kept in "$staging"/*; do  # a bucket no longer mirrored (deleted, or taken off the list) goes
        [ -d "$kept" ] || continue
        case " $buckets " in *" ${kept##*/} "*) ;; *) rm -rf "$kept" || return ;; esac
    done
    echo "$started" > "$since_file" || return
    mirrored="$count bucket(s)"
    client="cp"
    cp -al "$staging/." "$1/"
}

# $1: the temp directory to fill with the whole copy.
mirror() {
    mc_config=$(mktemp -d) || return
    mirror_with_config "$1"
    code=$?
    rm -rf "$mc_config"
    return "$code"
}

# Puts the whole copy in $1 in place of the last one.
publish() {
    old="$dir/.@NAME@.old"
    rm -rf "$old" && { [ ! -e "$out" ] || mv -f "$out" "$old"; } && mv -f "$1" "$out" && rm -rf "$old"
}

/*
 * A PROTOTYPE, measured by bench/authz.py, not part of mtlskit: what the nginx side of the
 * check costs when authz-server's answers are kept in worker memory instead of nginx's
 * proxy_cache (issue 25). Stock nginx 1.22 has no per-request store cheaper than the file
 * cache, so the generated config cannot do this; this module shows how far a C module
 * would go (docs/proxies.md has the numbers). Not reviewed for production use.
 *
 * Directives (location): mtlskit_check URI (the internal location asking authz-server, as
 * auth_request), mtlskit_check_key "..." (what an answer depends on), mtlskit_check_set
 * $var answer-header-name (as auth_request_set). Answers (2xx with the named headers, 401,
 * 403) are kept per worker until the end of the wall-clock second they were given in, as
 * the generated config's cache key does with $time_iso8601; anything else is not kept and
 * gives 500 (the generated config turns it into 503). Built against the nginx source of the
 * same version with --with-compat, it loads into Debian's nginx with load_module.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#define MTLSKIT_MAX_SET 16
#define MTLSKIT_MAX_ENTRIES 10000

typedef struct {
    ngx_str_t                 uri;
    ngx_http_complex_value_t *key;
    ngx_array_t              *names;   /* ngx_str_t: answer header names, index = slot */
} ngx_http_mtlskit_conf_t;

typedef struct {
    ngx_rbtree_node_t  node;     /* key = crc32 of the cache key */
    ngx_str_t          key;
    ngx_uint_t         status;
    ngx_uint_t         n;
    ngx_str_t          values[MTLSKIT_MAX_SET];
} ngx_http_mtlskit_entry_t;

typedef struct {
    ngx_uint_t            done;
    ngx_uint_t            status;
    ngx_str_t             key;
    ngx_str_t             values[MTLSKIT_MAX_SET];
} ngx_http_mtlskit_ctx_t;

static ngx_rbtree_t       mtlskit_tree;
static ngx_rbtree_node_t  mtlskit_sentinel;
static time_t             mtlskit_second = -1;
static ngx_uint_t         mtlskit_entries;

static ngx_int_t ngx_http_mtlskit_init(ngx_conf_t *cf);
static void *ngx_http_mtlskit_create_conf(ngx_conf_t *cf);
static char *ngx_http_mtlskit_merge_conf(ngx_conf_t *cf, void *parent, void *child);
static char *ngx_http_mtlskit_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_mtlskit_init_process(ngx_cycle_t *cycle);

static ngx_command_t ngx_http_mtlskit_commands[] = {
    { ngx_string("mtlskit_check"), NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mtlskit_conf_t, uri), NULL },
    { ngx_string("mtlskit_check_key"), NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot, NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mtlskit_conf_t, key), NULL },
    { ngx_string("mtlskit_check_set"), NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_mtlskit_set, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL },
    ngx_null_command
};

static ngx_http_module_t ngx_http_mtlskit_module_ctx = {
    NULL, ngx_http_mtlskit_init, NULL, NULL, NULL, NULL,
    ngx_http_mtlskit_create_conf, ngx_http_mtlskit_merge_conf
};

ngx_module_t ngx_http_mtlskit_module = {
    NGX_MODULE_V1, &ngx_http_mtlskit_module_ctx, ngx_http_mtlskit_commands, NGX_HTTP_MODULE,
    NULL, NULL, ngx_http_mtlskit_init_process, NULL, NULL, NULL, NULL, NGX_MODULE_V1_PADDING
};

static void
mtlskit_flush(void)
{
    ngx_rbtree_node_t *node;
    while (mtlskit_tree.root != &mtlskit_sentinel) {
        node = ngx_rbtree_min(mtlskit_tree.root, &mtlskit_sentinel);
        ngx_rbtree_delete(&mtlskit_tree, node);
        ngx_free(node);  /* entry and its strings are one allocation */
    }
    mtlskit_entries = 0;
}

static ngx_http_mtlskit_entry_t *
mtlskit_lookup(ngx_str_t *key, uint32_t hash)
{
    ngx_rbtree_node_t *node = mtlskit_tree.root;
    ngx_http_mtlskit_entry_t *e;
    ngx_int_t rc;
    while (node != &mtlskit_sentinel) {
        if (hash < node->key) { node = node->left; continue; }
        if (hash > node->key) { node = node->right; continue; }
        e = (ngx_http_mtlskit_entry_t *) node;
        rc = (key->len == e->key.len) ? ngx_memcmp(key->data, e->key.data, key->len)
                                       : (ngx_int_t) key->len - (ngx_int_t) e->key.len;
        if (rc == 0) return e;
        node = (rc < 0) ? node->left : node->right;
    }
    return NULL;
}

static void
mtlskit_rbtree_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t **p;
    ngx_http_mtlskit_entry_t *a, *b;
    ngx_int_t rc;
    for ( ;; ) {
        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;
        } else {
            a = (ngx_http_mtlskit_entry_t *) node; b = (ngx_http_mtlskit_entry_t *) temp;
            rc = (a->key.len == b->key.len) ? ngx_memcmp(a->key.data, b->key.data, a->key.len)
                                           : (ngx_int_t) a->key.len - (ngx_int_t) b->key.len;
            p = (rc < 0) ? &temp->left : &temp->right;
        }
        if (*p == sentinel) break;
        temp = *p;
    }
    *p = node; node->parent = temp; node->left = sentinel; node->right = sentinel; ngx_rbt_red(node);
}

static ngx_int_t
ngx_http_mtlskit_init_process(ngx_cycle_t *cycle)
{
    ngx_rbtree_init(&mtlskit_tree, &mtlskit_sentinel, mtlskit_rbtree_insert);
    return NGX_OK;
}

static void
mtlskit_store(ngx_http_mtlskit_ctx_t *ctx, ngx_uint_t n)
{
    size_t size = sizeof(ngx_http_mtlskit_entry_t) + ctx->key.len;
    ngx_uint_t i;
    u_char *p;
    ngx_http_mtlskit_entry_t *e;
    if (ngx_time() != mtlskit_second) { mtlskit_flush(); mtlskit_second = ngx_time(); }
    if (mtlskit_entries >= MTLSKIT_MAX_ENTRIES) mtlskit_flush();
    for (i = 0; i < n; i++) size += ctx->values[i].len;
    e = ngx_alloc(size, ngx_cycle->log);
    if (e == NULL) return;
    p = (u_char *) (e + 1);
    e->key.data = p; e->key.len = ctx->key.len; p = ngx_cpymem(p, ctx->key.data, ctx->key.len);
    e->status = ctx->status; e->n = n;
    for (i = 0; i < n; i++) {
        e->values[i].data = p; e->values[i].len = ctx->values[i].len;
        p = ngx_cpymem(p, ctx->values[i].data, ctx->values[i].len);
    }
    e->node.key = ngx_crc32_short(e->key.data, e->key.len);
    ngx_rbtree_insert(&mtlskit_tree, &e->node);
    mtlskit_entries++;
}

static ngx_int_t
ngx_http_mtlskit_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_http_mtlskit_ctx_t *ctx = data;
    ngx_http_mtlskit_conf_t *conf;
    ngx_list_part_t *part;
    ngx_table_elt_t *h;
    ngx_str_t *names;
    ngx_uint_t i, j;

    if (ctx->done) return rc;
    ctx->done = 1;
    ctx->status = r->headers_out.status;
    conf = ngx_http_get_module_loc_conf(r->parent, ngx_http_mtlskit_module);
    if (ctx->status >= 200 && ctx->status < 300 && r->upstream && conf->names) {
        names = conf->names->elts;
        part = &r->upstream->headers_in.headers.part;
        h = part->elts;
        for (i = 0; ; i++) {
            if (i >= part->nelts) {
                if (part->next == NULL) break;
                part = part->next; h = part->elts; i = 0;
            }
            for (j = 0; j < conf->names->nelts; j++) {
                if (h[i].key.len == names[j].len
                    && ngx_strncasecmp(h[i].key.data, names[j].data, names[j].len) == 0
                    && ctx->values[j].len == 0)
                {
                    ctx->values[j].len = h[i].value.len;
                    ctx->values[j].data = ngx_pstrdup(r->parent->pool, &h[i].value);
                }
            }
        }
    }
    if (ctx->status == 401 || ctx->status == 403 || (ctx->status >= 200 && ctx->status < 300)) {
        mtlskit_store(ctx, conf->names ? conf->names->nelts : 0);
    }
    return rc;
}

static ngx_int_t
ngx_http_mtlskit_handler(ngx_http_request_t *r)
{
    ngx_http_mtlskit_conf_t *conf = ngx_http_get_module_loc_conf(r, ngx_http_mtlskit_module);
    ngx_http_mtlskit_ctx_t *ctx;
    ngx_http_mtlskit_entry_t *e;
    ngx_http_request_t *sr;
    ngx_http_post_subrequest_t *ps;
    ngx_uint_t i;

    if (conf->uri.len == 0 || conf->key == NULL) return NGX_DECLINED;
    ctx = ngx_http_get_module_ctx(r, ngx_http_mtlskit_module);
    if (ctx != NULL) {
        if (!ctx->done) return NGX_AGAIN;
        if (ctx->status >= 200 && ctx->status < 300) return NGX_OK;
        if (ctx->status == 401 || ctx->status == 403) return ctx->status;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mtlskit_ctx_t));
    if (ctx == NULL) return NGX_ERROR;
    if (ngx_http_complex_value(r, conf->key, &ctx->key) != NGX_OK) return NGX_ERROR;
    ngx_http_set_ctx(r, ctx, ngx_http_mtlskit_module);
    if (ngx_time() == mtlskit_second) {
        e = mtlskit_lookup(&ctx->key, ngx_crc32_short(ctx->key.data, ctx->key.len));
        if (e != NULL) {
            ctx->done = 1; ctx->status = e->status;
            for (i = 0; i < e->n; i++) {
                ctx->values[i].len = e->values[i].len;
                ctx->values[i].data = ngx_pnalloc(r->pool, e->values[i].len + 1);
                if (ctx->values[i].data == NULL) return NGX_ERROR;
                ngx_memcpy(ctx->values[i].data, e->values[i].data, e->values[i].len);
            }
            if (e->status >= 200 && e->status < 300) return NGX_OK;
            return e->status;
        }
    }
    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) return NGX_ERROR;
    ps->handler = ngx_http_mtlskit_done; ps->data = ctx;
    if (ngx_http_subrequest(r, &conf->uri, NULL, &sr, ps, NGX_HTTP_SUBREQUEST_WAITED) != NGX_OK) return NGX_ERROR;
    sr->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (sr->request_body == NULL) return NGX_ERROR;
    sr->header_only = 1;
    return NGX_AGAIN;
}

static ngx_int_t
ngx_http_mtlskit_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_mtlskit_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_mtlskit_module);
    if (ctx == NULL || !ctx->done || ctx->values[data].len == 0) { v->not_found = 1; return NGX_OK; }
    v->len = ctx->values[data].len; v->data = ctx->values[data].data;
    v->valid = 1; v->no_cacheable = 0; v->not_found = 0;
    return NGX_OK;
}

static char *
ngx_http_mtlskit_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mtlskit_conf_t *mcf = conf;
    ngx_str_t *value = cf->args->elts, *name;
    ngx_http_variable_t *var;
    if (value[1].data[0] != '$') return "needs a variable";
    value[1].len--; value[1].data++;
    if (mcf->names == NULL || mcf->names == NGX_CONF_UNSET_PTR) {
        mcf->names = ngx_array_create(cf->pool, 8, sizeof(ngx_str_t));
        if (mcf->names == NULL) return NGX_CONF_ERROR;
    }
    if (mcf->names->nelts >= MTLSKIT_MAX_SET) return "too many";
    var = ngx_http_add_variable(cf, &value[1], NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) return NGX_CONF_ERROR;
    var->get_handler = ngx_http_mtlskit_variable;
    var->data = mcf->names->nelts;
    name = ngx_array_push(mcf->names);
    *name = value[2];
    return NGX_CONF_OK;
}

static void *
ngx_http_mtlskit_create_conf(ngx_conf_t *cf)
{
    ngx_http_mtlskit_conf_t *conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mtlskit_conf_t));
    if (conf == NULL) return NULL;
    conf->names = NGX_CONF_UNSET_PTR;
    conf->key = NULL;
    return conf;
}

static char *
ngx_http_mtlskit_merge_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_mtlskit_conf_t *prev = parent, *conf = child;
    ngx_conf_merge_str_value(conf->uri, prev->uri, "");
    ngx_conf_merge_ptr_value(conf->names, prev->names, NULL);
    if (conf->key == NULL) conf->key = prev->key;
    return NGX_CONF_OK;
}

static ngx_int_t
ngx_http_mtlskit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt *h;
    ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) return NGX_ERROR;
    *h = ngx_http_mtlskit_handler;
    return NGX_OK;
}

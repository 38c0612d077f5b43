"""Stock stores: one interface (`base.StockStore`), in-process and Redis Lua."""

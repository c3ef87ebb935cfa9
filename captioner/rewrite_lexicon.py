"""The bilingual word lists the prompt rewriter reads a user prompt with (captioner/rewrite.py).

A short prompt names a few things (subjects), what they do (actions), sometimes the camera,
the place, the light and the style. Without a tagger or segmenter (none is installed, and
Chinese has no spaces) the rewriter recognises those words from the fixed lists below, in
English and Simplified Chinese, each entry with its counterpart in the other language. The
same lists serve the entity check: a subject of the prompt must reappear in the rewrite under
one of its forms, in the rewrite's language.

Entries are (canonical English, English forms, Chinese forms, class). English forms are whole
words (plurals listed or regular: 's'/'es' is added when matching); Chinese forms are substrings.
Order matters where forms overlap: longer Chinese forms are tried first (``小狗`` before ``狗``).
The lists are deliberately small; anything outside them is not recognised (see
captioner/rewrite_checks.py for what the checks do about it).
"""

from __future__ import annotations

# (canonical, en forms, zh forms, content class of captioner/caption_schema.py)
ENTITIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("woman", ("woman", "women", "lady", "ladies"), ("女人", "女子", "女士", "妇女"), "people"),
    ("man", ("man", "men", "gentleman"), ("男人", "男子", "男士"), "people"),
    ("girl", ("girl",), ("女孩", "小女孩", "姑娘"), "people"),
    ("boy", ("boy",), ("男孩", "小男孩"), "people"),
    ("child", ("child", "children", "kid"), ("孩子", "儿童", "小孩"), "people"),
    ("baby", ("baby", "babies"), ("婴儿", "宝宝"), "people"),
    ("person", ("person", "people", "figure"), ("人物",), "people"),
    ("dancer", ("dancer",), ("舞者",), "people"),
    ("cyclist", ("cyclist",), ("骑车人", "骑手"), "people"),
    ("chef", ("chef",), ("厨师",), "people"),
    ("soldier", ("soldier",), ("士兵",), "people"),
    ("crowd", ("crowd",), ("人群",), "people"),
    ("dog", ("dog", "puppy", "puppies"), ("狗", "小狗"), "nature"),
    ("cat", ("cat", "kitten"), ("猫", "小猫"), "nature"),
    ("bird", ("bird",), ("鸟", "小鸟"), "nature"),
    ("horse", ("horse",), ("马", "马匹", "骏马"), "nature"),
    ("fish", ("fish", "fishes"), ("鱼",), "nature"),
    ("cow", ("cow",), ("牛", "奶牛"), "nature"),
    ("sheep", ("sheep",), ("羊", "绵羊"), "nature"),
    ("rabbit", ("rabbit", "bunny", "bunnies"), ("兔子",), "nature"),
    ("butterfly", ("butterfly", "butterflies"), ("蝴蝶",), "nature"),
    ("panda", ("panda",), ("熊猫",), "nature"),
    ("tiger", ("tiger",), ("老虎",), "nature"),
    ("lion", ("lion",), ("狮子",), "nature"),
    ("elephant", ("elephant",), ("大象",), "nature"),
    ("bear", ("bear",), ("熊",), "nature"),
    ("dragon", ("dragon",), ("龙",), "animation"),
    ("robot", ("robot",), ("机器人",), "objects"),
    ("car", ("car",), ("汽车", "轿车", "车"), "objects"),
    ("truck", ("truck",), ("卡车",), "objects"),
    ("bus", ("bus", "buses"), ("公交车", "巴士"), "objects"),
    ("train", ("train",), ("火车", "列车"), "objects"),
    ("bicycle", ("bicycle", "bike"), ("自行车", "单车"), "objects"),
    ("motorcycle", ("motorcycle", "motorbike"), ("摩托车",), "objects"),
    ("boat", ("boat", "ship"), ("船", "小船"), "objects"),
    ("airplane", ("airplane", "plane", "aircraft"), ("飞机",), "objects"),
    ("balloon", ("balloon",), ("气球",), "objects"),
    ("kite", ("kite",), ("风筝",), "objects"),
    ("ball", ("ball",), ("球",), "objects"),
    ("umbrella", ("umbrella",), ("伞", "雨伞"), "objects"),
    ("lantern", ("lantern",), ("灯笼",), "objects"),
    ("candle", ("candle",), ("蜡烛",), "objects"),
    ("cup", ("cup", "mug"), ("杯子",), "objects"),
    ("book", ("book",), ("书", "书本"), "objects"),
    ("table", ("table",), ("桌子", "桌"), "objects"),
    ("chair", ("chair",), ("椅子",), "objects"),
    ("flower", ("flower",), ("花", "花朵", "鲜花"), "nature"),
    ("tree", ("tree",), ("树", "树木", "大树"), "nature"),
    ("leaf", ("leaf", "leaves"), ("树叶", "叶子"), "nature"),
    ("mountain", ("mountain",), ("山", "山峰", "高山"), "nature"),
    ("river", ("river",), ("河", "河流", "小河"), "nature"),
    ("wave", ("wave",), ("海浪", "波浪"), "nature"),
    ("cloud", ("cloud",), ("云朵", "云"), "nature"),
    ("sun", ("sun",), ("太阳",), "nature"),
    ("moon", ("moon",), ("月亮",), "nature"),
    ("house", ("house",), ("房子", "房屋"), "objects"),
    ("building", ("building", "skyscraper"), ("大楼", "建筑", "高楼"), "objects"),
    ("bridge", ("bridge",), ("桥",), "objects"),
)

# (canonical, en forms (stems; 's'/'es'/'ing'/'ed' endings match), zh forms)
ACTIONS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("dances", ("danc",), ("跳舞", "起舞")),
    ("runs", ("run", "runn", "ran", "jog"), ("奔跑", "跑步", "跑")),
    ("walks", ("walk",), ("行走", "散步", "走")),
    ("jumps", ("jump", "leap"), ("跳跃", "跳")),
    ("flies", ("fly", "flies", "flew", "flying", "soar"), ("飞翔", "飞行", "飞")),
    ("swims", ("swim", "swimm", "swam"), ("游泳", "游动", "游")),
    ("rides", ("rid", "rode"), ("骑行", "骑着", "骑")),
    ("drives", ("driv", "drove"), ("驾驶", "开车", "行驶")),
    ("rolls", ("roll",), ("滚动", "滚")),
    ("chases", ("chas",), ("追逐", "追赶", "追")),
    ("plays", ("play",), ("玩耍", "嬉戏", "玩")),
    ("eats", ("eat", "ate"), ("吃",)),
    ("sits", ("sit", "sitt", "sat"), ("坐着", "坐")),
    ("stands", ("stand", "stood"), ("站着", "站立")),
    ("sleeps", ("sleep", "slept"), ("睡觉", "熟睡")),
    ("sings", ("sing", "sang"), ("唱歌",)),
    ("cooks", ("cook",), ("做饭", "烹饪")),
    ("reads", ("read",), ("阅读", "看书")),
    ("waves", ("wav",), ("挥手",)),
    ("falls", ("fall", "fell"), ("落下", "飘落")),
    ("spins", ("spin", "spinn", "spun", "rotat", "turn"), ("旋转", "转动")),
    ("burns", ("burn",), ("燃烧",)),
    ("flows", ("flow",), ("流淌", "流动")),
    ("sways", ("sway",), ("摇曳", "摇摆")),
    ("crashes", ("crash", "break", "broke"), ("拍打", "冲击")),
    ("climbs", ("climb",), ("攀爬", "爬")),
    ("fights", ("fight", "fought"), ("打斗", "战斗")),
)

# camera movement (caption_schema CAMERA_MOVEMENTS) from words of the prompt; longest first
CAMERA_WORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("pan_left", ("pans left", "pan left", "panning left"), ("向左平移", "左移", "左摇")),
    ("pan_right", ("pans right", "pan right", "panning right"), ("向右平移", "右移", "右摇")),
    ("tilt_up", ("tilts up", "tilt up"), ("上摇", "向上倾斜")),
    ("tilt_down", ("tilts down", "tilt down"), ("下摇", "向下倾斜")),
    ("zoom_in", ("zooms in", "zoom in", "push in", "pushes in"), ("推近", "拉近", "推镜")),
    ("zoom_out", ("zooms out", "zoom out", "pull out", "pulls back"), ("拉远", "拉镜")),
    ("tracking", ("tracking shot", "tracking", "follows", "follow shot"), ("跟拍", "跟随镜头")),
    ("orbit", ("orbit", "orbits", "circles around"), ("环绕", "绕拍")),
    ("handheld", ("handheld", "hand-held"), ("手持",)),
    ("static", ("static", "still camera", "locked-off", "tripod"), ("固定镜头", "静止镜头")),
)
SHOT_WORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("extreme_close_up", ("extreme close-up", "extreme close up", "macro"), ("大特写", "微距")),
    ("close_up", ("close-up", "close up", "closeup"), ("特写", "近景")),
    ("wide", ("wide shot", "wide-angle", "panorama", "aerial", "drone"), ("远景", "全景", "航拍", "广角")),
    ("full", ("full shot", "full body"), ("全身",)),
)
ANGLE_WORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("overhead", ("overhead", "top-down", "bird's-eye", "aerial", "drone"), ("俯拍", "鸟瞰", "航拍")),
    ("low", ("low angle", "low-angle"), ("仰拍", "低角度")),
    ("high", ("high angle", "high-angle"), ("高角度",)),
)
SPEED_WORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("slow", ("slowly", "slow", "gently", "gentle"), ("缓慢", "慢慢", "缓缓", "轻轻")),
    ("fast", ("fast", "quickly", "rapidly", "quick"), ("快速", "迅速", "飞快", "疾驰")),
)
# (English scene phrase, en forms, zh forms, zh phrase)
SCENES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("a beach", ("beach", "seaside", "shore"), ("海滩", "沙滩", "海边"), "海滩"),
    ("a city street", ("street", "road", "city", "downtown"), ("街道", "街头", "马路", "城市"), "城市街道"),
    ("a forest", ("forest", "woods", "jungle"), ("森林", "树林", "丛林"), "森林"),
    ("a park", ("park", "garden", "lawn"), ("公园", "花园", "草地"), "公园"),
    ("a kitchen", ("kitchen",), ("厨房",), "厨房"),
    ("a room indoors", ("room", "indoors", "bedroom", "living room", "office"),
     ("房间", "室内", "卧室", "客厅", "办公室"), "室内房间"),
    ("a stage", ("stage", "concert"), ("舞台", "演唱会"), "舞台"),
    ("a field", ("field", "meadow", "farm"), ("田野", "草原", "农场"), "田野"),
    ("a desert", ("desert", "dunes"), ("沙漠",), "沙漠"),
    ("a snowy landscape", ("snow", "snowy", "winter"), ("雪地", "雪山", "冬天", "下雪"), "雪景"),
    ("the ocean", ("ocean", "sea", "underwater"), ("大海", "海洋", "海底", "水下"), "大海"),
    ("a lake", ("lake", "pond"), ("湖", "池塘"), "湖边"),
    ("the sky", ("sky",), ("天空",), "天空"),
    ("outer space", ("space", "galaxy", "planet"), ("太空", "宇宙", "星球"), "太空"),
)
# lighting: (brightness, source, en forms, zh forms, en phrase, zh phrase); no colour words in phrases
LIGHTING: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str, str], ...] = (
    ("dim", "natural", ("sunset", "dusk", "twilight", "sunrise", "dawn"),
     ("日落", "夕阳", "黄昏", "日出", "清晨"),
     "the low, warm light of the sun near the horizon", "太阳低垂时温暖柔和的光线"),
    ("dark", "artificial", ("night", "neon", "midnight"), ("夜晚", "夜里", "夜色", "霓虹", "深夜"),
     "artificial lights in the dark of night", "夜色中的人造灯光"),
    ("bright", "natural", ("sunny", "sunlit", "sunlight", "daylight", "noon"),
     ("阳光", "晴朗", "正午", "白天"), "bright natural daylight", "明亮的自然日光"),
    ("dim", "natural", ("rain", "rainy", "fog", "foggy", "mist", "cloudy", "storm"),
     ("下雨", "雨中", "雾", "阴天", "暴风雨"),
     "soft, diffuse light under an overcast sky", "阴天下柔和的漫射光"),
)
# style (caption_schema STYLES): en forms, zh forms
STYLE_WORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("animated", ("anime", "cartoon", "animated", "animation", "pixar"), ("动画", "卡通", "动漫")),
    ("cinematic", ("cinematic", "film", "movie"), ("电影感", "电影", "大片")),
    ("vintage", ("vintage", "retro", "old film", "8mm", "16mm"), ("复古", "老电影", "胶片")),
    ("documentary", ("documentary",), ("纪录片",)),
    ("cgi", ("cgi", "3d render", "rendered", "unreal engine"), ("三维渲染", "特效", "渲染")),
)
STYLE_PHRASES = {  # en, zh
    "realistic": ("realistic live-action footage", "写实的真实影像"),
    "animated": ("an animated style", "动画风格"),
    "cinematic": ("a cinematic style with a shallow depth of field", "电影感风格，景深较浅"),
    "vintage": ("the look of vintage film", "复古胶片质感"),
    "documentary": ("a documentary style", "纪录片风格"),
    "cgi": ("a polished computer-generated style", "精致的电脑生成画面风格"),
}
CAMERA_PHRASES = {  # movement -> (en, zh); speed is added in front when known
    "static": ("The camera is static", "镜头固定不动"),
    "pan_left": ("The camera pans to the left", "镜头向左平移"),
    "pan_right": ("The camera pans to the right", "镜头向右平移"),
    "tilt_up": ("The camera tilts up", "镜头向上摇"),
    "tilt_down": ("The camera tilts down", "镜头向下摇"),
    "zoom_in": ("The camera zooms in", "镜头推近"),
    "zoom_out": ("The camera zooms out", "镜头拉远"),
    "tracking": ("The camera tracks the subject", "镜头跟随主体拍摄"),
    "orbit": ("The camera orbits around the subject", "镜头环绕主体拍摄"),
    "handheld": ("The handheld camera moves with a slight shake", "手持镜头轻微晃动"),
}
SHOT_PHRASES = {  # shot size -> (en, zh)
    "extreme_close_up": ("an extreme close-up", "大特写"),
    "close_up": ("a close-up", "特写"),
    "medium": ("a medium shot", "中景"),
    "full": ("a full shot", "全景"),
    "wide": ("a wide shot", "远景"),
}
ANGLE_PHRASES = {"eye_level": ("at eye level", "平视角度"), "overhead": ("from overhead", "俯视角度"),
                 "low": ("from a low angle", "低角度仰拍"), "high": ("from a high angle", "高角度俯拍")}
ZH_NOT_ENTITIES = ("马路", "马上", "花园", "花纹", "龙卷风", "书包", "山羊", "车站", "火山", "云霄", "桌面")
ZH_MEASURE = "只个位名辆条匹头棵朵座艘架把张本杯片群对"  # measure words between a count and a noun
ZH_COUNT_WORDS = {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}
EN_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
                  10: "ten"}
EN_STOPWORDS = frozenset(
    "a an the and or of in on at to with by from into onto over under near across through along "
    "behind beside between while as its his her their is are was be being it this that these those "
    "very some several many few one two three four five six seven eight nine ten left right front back "
    "up down out off around above below".split()
)
EN_ADJECTIVES = frozenset(
    "big small little large tiny huge tall short old young new wooden golden fluffy happy sad cute "
    "beautiful pretty bright dark shiny wet dry long round heavy light fast slow giant wild lonely "
    "busy quiet empty ancient modern futuristic colorful colourful majestic".split()
)
